"""The one way a run folder is written: plots, extra files, ``report.md``, then ``report.json``.

Every command and workflow that leaves a report (correction, sweep, circuit, compression,
pruning runs, adapter inspection) writes it here, so run folders look alike and ``report.json``
always comes last: its presence marks a complete run. Plots are drawn on a
:class:`matplotlib.figure.Figure` made by :func:`new_figure` — never through ``pyplot``, so the
user's matplotlib backend and open figures are left alone (a notebook keeps working).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hf_sparc._files import atomic_write

REPORT_MARKDOWN = "report.md"
REPORT_JSON = "report.json"


def new_figure(width: float, height: float, **subplots: Any):
    """``(figure, axes)``: a figure that belongs to no pyplot state, with ``subplots`` as in
    :meth:`matplotlib.figure.Figure.subplots` (e.g. ``ncols=2``)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    return figure, figure.subplots(**subplots)


def _encoded(name: str, content: Any) -> bytes | str:
    if hasattr(content, "savefig"):  # a Figure
        buffer = io.BytesIO()
        content.tight_layout()
        content.savefig(buffer, format=Path(name).suffix.lstrip(".") or "png", dpi=120)
        return buffer.getvalue()
    if isinstance(content, str | bytes):
        return content
    return json.dumps(content, indent=2) + "\n"


def write_files(folder: str | os.PathLike, files: Mapping[str, Any]) -> None:
    """Write each ``name -> content`` into ``folder`` atomically: a ``Figure`` as an image (format
    from the name's suffix), ``str``/``bytes`` as they are, anything else as indented JSON."""
    folder = Path(folder)
    for name, content in files.items():
        atomic_write(folder / name, _encoded(name, content))


def write_report(
    folder: str | os.PathLike,
    *,
    markdown: str,
    data: Mapping[str, Any],
    files: Mapping[str, Any] | None = None,
) -> None:
    """A complete run folder: ``files`` (plots, unit listings, ...) and ``report.md`` first, then
    ``report.json`` (``data``) last."""
    write_files(folder, {**(files or {}), REPORT_MARKDOWN: markdown})
    write_files(folder, {REPORT_JSON: dict(data)})
