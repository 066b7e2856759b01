"""The one home of atomic writes: a reader sees the old output or the new one, never half of one.

- :func:`atomic_write`: one file (text or bytes).
- :func:`save_tensors` / :func:`load_tensors`: one safetensors file per object, metadata as JSON in
  its header, read without pickle, corrupt or foreign files reported as one clear ``ValueError``.
- :func:`write_group`: a set of files that only make sense together (an adapter's config and
  weights, a pruner folder) inside a folder that may hold other things.
- :class:`AtomicFolder`: a whole folder (a command's run folder) that appears only when complete.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file


@contextmanager
def _staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; renamed onto ``path`` when the block
    finishes, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to a temporary file beside ``path``, then rename it into place:
    a reader sees the old file or the new one, never half of one."""
    with _staged_file(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def save_tensors(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    key: str,
    meta: dict,
    *,
    overwrite: bool = False,
) -> None:
    """Write ``tensors`` with ``meta`` under header ``key`` to a temp file, then rename into place,
    so ``path`` never holds a half-written file. An existing ``path`` raises ``FileExistsError``
    unless ``overwrite``."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    tensors = {n: t.contiguous().cpu() for n, t in tensors.items()}
    header = json.dumps(meta)
    with _staged_file(path) as tmp:
        save_file(tensors, str(tmp), metadata={key: header, f"{key}.sha256": _digest(tensors, header)})


def _digest(tensors: Mapping[str, torch.Tensor], header: str) -> str:
    """SHA-256 of the header and of every tensor's name, dtype, shape and bytes: any flipped bit
    that still parses as a valid file is caught on load instead of selecting the wrong units."""
    digest = hashlib.sha256(header.encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"|{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_tensors(
    path: str | os.PathLike, key: str, what: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_tensors`; ``what`` names the object in error messages."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No {what} file at {path}.")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            header, digest = metadata.get(key), metadata.get(f"{key}.sha256")
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises several types for corrupt files
        raise ValueError(f"{path} is not a readable safetensors {what} file: {error}") from error
    if header is None:
        raise ValueError(f"{path} has no hf_sparc {what} metadata; was it written by hf_sparc?")
    # files written before the checksum existed have none; all others must match it
    if digest is not None and digest != _digest(tensors, header):
        raise ValueError(
            f"{path}: the {what} data does not match its checksum (corrupted or edited file); refusing it."
        )
    try:
        meta = json.loads(header)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} has malformed hf_sparc {what} metadata: {error}") from error
    if not isinstance(meta, dict):
        raise ValueError(f"{path} has malformed hf_sparc {what} metadata: not a JSON object.")
    return tensors, meta


def write_group(
    directory: str | os.PathLike,
    write: Callable[[Path], None],
    *,
    marker: str,
    owned: Collection[str],
    overwrite: bool,
    keep_existing: Collection[str] = (),
) -> None:
    """Write a set of files that belong together into ``directory``, all or nothing.

    ``write(staging)`` writes the new files into an empty staging folder (sub-folders allowed)
    inside ``directory``; only when it has finished are they moved into place. The ``marker`` file
    (the one every loader needs first, e.g. ``adapter_config.json``) is removed before anything is
    replaced and moved in last, so an interruption at any point leaves the old complete set (failure
    while writing) or a folder without the marker, which no loader accepts — never old and new
    files mixed.

    Args:
        directory: Target folder (created if needed).
        write: Writes the new files into the given staging folder.
        marker: File name whose presence means "this set is complete".
        owned: ``fnmatch`` patterns of the file names that belong to the set: their presence means
            "something is here already" (``FileExistsError`` unless ``overwrite``), and stale ones
            the new set does not contain are removed when it is committed.
        overwrite: Replace an existing set.
        keep_existing: Names that are written only where absent unless ``overwrite`` (a model card).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".hf_sparc-staging-", dir=directory))
    try:
        write(staging)
        folders = sorted({path.parent for path in staging.rglob("*") if path.is_file()})
        targets = [directory / folder.relative_to(staging) for folder in folders]
        existing = [
            str(target / name) for target in targets if target.is_dir() for name in _owned(target, owned)
        ]
        if existing and not overwrite:
            raise FileExistsError(
                f"{directory} already holds {', '.join(existing)}; refusing to overwrite. Pass "
                "overwrite=True to replace it, or choose another directory."
            )
        for folder, target in zip(folders, targets, strict=True):
            _commit(folder, target, marker, owned, overwrite, keep_existing)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _owned(folder: Path, patterns: Collection[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if any(fnmatch.fnmatch(p.name, pat) for pat in patterns))


def _commit(
    staged: Path, target: Path, marker: str, owned: Collection[str], overwrite: bool, keep: Collection[str]
) -> None:
    """Move ``staged``'s files into ``target``: marker out first, stale owned files out, marker in last."""
    target.mkdir(parents=True, exist_ok=True)
    new = {p.name for p in staged.iterdir() if p.is_file()}
    (target / marker).unlink(missing_ok=True)
    for name in _owned(target, owned):
        if name not in new:
            (target / name).unlink()
    for name in sorted(new - {marker}):
        if name in keep and (target / name).exists() and not overwrite:
            continue
        os.replace(staged / name, target / name)
    if marker in new:
        os.replace(staged / marker, target / marker)


class AtomicFolder:
    """A folder that appears at ``target`` only when the work in it succeeded (temp folder + rename).

    Write into ``work``; on leaving the ``with`` block normally the folder replaces ``target``,
    on any exception (even ``KeyboardInterrupt``) it is deleted and ``target`` is left as it was.
    A non-empty ``target`` raises ``FileExistsError`` up front unless ``overwrite``.
    """

    def __init__(self, target: str | os.PathLike, overwrite: bool) -> None:
        self.target = Path(target)
        if (
            self.target.exists()
            and (not self.target.is_dir() or any(self.target.iterdir()))
            and not overwrite
        ):
            raise FileExistsError(f"{target} exists and is not empty; pass --overwrite to replace it.")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))

    def commit(self) -> None:
        """Move ``work`` to ``target``, replacing what was there."""
        old = None
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, old)
        os.replace(self.work, self.target)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()

    def discard(self) -> None:
        """Delete ``work``; ``target`` stays as it was."""
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> AtomicFolder:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None:
            self.commit()
        else:
            self.discard()
