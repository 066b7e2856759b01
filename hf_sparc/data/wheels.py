"""Files inside installed PyPI distributions, found without importing them (the offline assets)."""

from __future__ import annotations

import importlib.metadata as importlib_metadata
from pathlib import Path


class AssetNotInstalledError(ImportError):
    """A PyPI package holding an asset is not installed; the message says the pip command."""


def distribution(name: str) -> importlib_metadata.Distribution:
    """``importlib.metadata.distribution`` (a seam for tests)."""
    return importlib_metadata.distribution(name)


def dist_file(dist_name: str, relpath: str, pip_command: str, what: str) -> Path:
    """Path of ``relpath`` inside installed distribution ``dist_name``.

    Raises :class:`AssetNotInstalledError` (one line, with ``pip_command``) if the distribution
    is not installed or the file is missing from it.
    """
    try:
        dist = distribution(dist_name)
    except importlib_metadata.PackageNotFoundError:
        raise AssetNotInstalledError(
            f"{what} needs the PyPI package {dist_name!r}, which is not installed; run: {pip_command}"
        ) from None
    path = Path(str(dist.locate_file(relpath)))
    if not path.is_file():
        raise AssetNotInstalledError(
            f"{what}: {relpath} is missing from the installed package {dist_name!r}; "
            f"reinstall it: {pip_command} --force-reinstall"
        )
    return path
