"""Share SPARC adapters on the Hugging Face Hub.

:func:`upload_folder` is the one uploader: :func:`push_to_hub`, ``SparcPruner.push_to_hub`` and
``hf-sparc push`` all go through it. :func:`model_card` is re-exported from
:mod:`hf_sparc.tuner.card`, where it lives.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

from huggingface_hub import HfApi

from hf_sparc.tuner.card import model_card
from hf_sparc.tuner.io import save_adapter

if TYPE_CHECKING:
    from peft import PeftModel

__all__ = ["model_card", "push_to_hub", "upload_folder"]


def upload_folder(
    repo_id: str,
    folder: str | os.PathLike,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str,
    create_pr: bool = False,
) -> str:
    """Upload every file of ``folder`` to the model repository ``repo_id`` in one commit (or, with
    ``create_pr``, one pull request against ``revision``).

    The repository is created if needed (``private`` applies only then).

    Returns:
        The URL of the commit, or of the pull request.
    """
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    options = {"create_pr": True} if create_pr else {}  # only when asked: older hubs lack the flag
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=os.fspath(folder), revision=revision, commit_message=commit_message,
        **options,
    )  # fmt: skip
    return (getattr(commit, "pr_url", None) or commit.commit_url) if create_pr else commit.commit_url


def push_to_hub(
    peft_model: PeftModel,
    repo_id: str,
    *,
    adapter_name: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload SPARC pruning adapter",
    metrics: dict[str, float] | None = None,
    reference_data: str | None = None,
    create_pr: bool = False,
    **card: Any,
) -> str:
    """Upload one SPARC adapter (config, indices, model card) to ``repo_id`` in one commit
    (``create_pr``: as a pull request). ``card``: more model-card fields (``metrics_before``,
    ``license``, ``datasets``; see :func:`model_card`).

    The repository is created if needed. Load it back with
    ``AutoModelForCausalLM.from_pretrained(repo_id)`` or ``PeftModel.from_pretrained(base, repo_id)``
    after ``import hf_sparc``.

    Returns:
        The URL of the commit.
    """
    with tempfile.TemporaryDirectory() as folder:
        save_adapter(
            peft_model,
            folder,
            adapter_name=adapter_name,
            repo_id=repo_id,
            metrics=metrics,
            reference_data=reference_data,
            **card,
        )
        return upload_folder(
            repo_id, folder, token=token, private=private, revision=revision, commit_message=commit_message,
            create_pr=create_pr,
        )  # fmt: skip
