"""One safetensors file per object, metadata as JSON in its header: written atomically, read
without pickle, corrupt or foreign files reported as one clear ``ValueError``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], key: str, meta: dict) -> None:
    """Write ``tensors`` with ``meta`` under header ``key`` to a temp file, then rename into place,
    so ``path`` never holds a half-written file."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file(
            {n: t.contiguous().cpu() for n, t in tensors.items()}, tmp, metadata={key: json.dumps(meta)}
        )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_tensors(
    path: str | os.PathLike, key: str, what: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_tensors`; ``what`` names the object in error messages."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No {what} file at {path}.")
    try:
        with safe_open(path, framework="pt") as handle:
            header = (handle.metadata() or {}).get(key)
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises several types for corrupt files
        raise ValueError(f"{path} is not a readable safetensors {what} file: {error}") from error
    if header is None:
        raise ValueError(f"{path} has no hf_sparc {what} metadata; was it written by hf_sparc?")
    try:
        meta = json.loads(header)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} has malformed hf_sparc {what} metadata: {error}") from error
    if not isinstance(meta, dict):
        raise ValueError(f"{path} has malformed hf_sparc {what} metadata: not a JSON object.")
    return tensors, meta
