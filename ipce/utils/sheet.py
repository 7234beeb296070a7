"""Contact sheets: per row a title and a line of thumbnails, each with a caption under it.

Drawn on a matplotlib Figure with the Agg canvas (pyplot is never imported) and written
atomically (ipce.utils.io).
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

from PIL import Image

from ipce.utils import io

DPI = 100
THUMB_INCHES = 1.8


def contact_sheet(rows: Sequence[tuple[str, Sequence[tuple[Image.Image, str]]]], path: str | Path) -> Path:
    """Write a PNG of `rows`, each (title, [(image, caption), ...]) in the order given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = max(1, max((len(items) for _, items in rows), default=1))
    fig = Figure(figsize=(columns * THUMB_INCHES, len(rows) * (THUMB_INCHES + 0.75)), dpi=DPI)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(max(1, len(rows)), columns, hspace=0.55, wspace=0.05)
    for r, (title, items) in enumerate(rows):
        for c in range(columns):
            ax = fig.add_subplot(grid[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(items):
                image, caption = items[c]
                thumb = image.convert("RGB")
                thumb.thumbnail((256, 256))
                ax.imshow(thumb)
                ax.set_xlabel(caption, fontsize=10)
            else:
                ax.set_axis_off()
            if c == 0:
                width = max(20, int(columns * THUMB_INCHES * 9))  # characters that fit across the row
                ax.set_title(textwrap.shorten(title, width, placeholder="..."), loc="left", fontsize=11,
                             fontweight="bold")
    with io.atomic_file(path, fsync=True) as tmp:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight")
    return Path(path)
