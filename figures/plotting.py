"""The plotting helpers every figure shares: the one atomic :func:`save_figure` and :func:`finish`.

A figure is rendered to PNG in memory and written with one atomic replace (:func:`dynamics.atomic.write_bytes`),
so a reader never sees a half-written file and an interrupted run leaves the previous PNG intact.

>>> import tempfile, pathlib
>>> from matplotlib.figure import Figure
>>> fig = Figure(figsize=(2, 2)); _ = fig.add_subplot().plot([0, 1], [1, 0])
>>> with tempfile.TemporaryDirectory() as d:
...     path = pathlib.Path(d) / "sub" / "f.png"
...     _ = finish(fig, path)
...     path.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Optional

from matplotlib.figure import Figure

from dynamics.atomic import write_bytes

__all__ = ["save_figure", "finish", "DPI"]

#: resolution of every PNG the project writes.
DPI = 150


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Save ``fig`` as PNG at ``path`` atomically (parent folders created); returns the path.

    Rendered in memory with a tight bounding box, then written in one replace.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    write_bytes(path, buf.getvalue())
    return Path(path)


def finish(fig: Figure, out_path: Optional[str | os.PathLike] = None) -> Figure:
    """Tight layout, then :func:`save_figure` to ``out_path`` when given; returns the figure."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    if out_path is not None:
        save_figure(fig, out_path)
    return fig
