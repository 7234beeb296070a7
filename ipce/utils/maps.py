"""Quality maps: the scores of 224x224 crops on a grid over an image, and their picture.

`QualityMap` holds plain values (what `Scorer.explain` returns); `render_quality_map` draws it over
the image: each pixel coloured by the mean score of the crops that cover it, a colour bar on the
score scale, the final score in the title. Drawn on a matplotlib Figure with the Agg canvas
(pyplot is never imported, as in ipce.utils.report).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

DPI = 100
COLOURS = "RdYlGn"  # red low, green high


@dataclass
class QualityMap:
    """The crops of one image and their scores, in the original image's pixel coordinates.

    boxes: (x, y, size) of each crop (top-left corner and side, in original pixels; the crops are
    224 px squares of the resized image, whose long side is truncated to whole pixels, so a box
    may overrun the far edge by under a pixel); scores: each crop's score read from its own level
    distribution; global_score: the global view's; score: the method's final score (its own crops
    and the global view, equal to `Scorer.score` of the image); scale: (lo, hi) of every score."""
    image_size: tuple[int, int]  # (width, height) of the original image
    boxes: list[tuple[float, float, float]]
    scores: list[float]
    global_score: float
    score: float
    scale: tuple[float, float]
    stride: int  # of the grid, in pixels of the resized image
    prompt: str = ""

    def pixel_map(self) -> np.ndarray:
        """[height, width] float array: the mean score of the crops covering each pixel (NaN where none)."""
        width, height = self.image_size
        total = np.zeros((height, width))
        count = np.zeros((height, width))
        for (x, y, size), score in zip(self.boxes, self.scores):
            left, top = int(round(x)), int(round(y))
            right, bottom = min(width, int(round(x + size))), min(height, int(round(y + size)))
            total[top:bottom, left:right] += score
            count[top:bottom, left:right] += 1
        with np.errstate(invalid="ignore"):
            return total / count

    def rows(self) -> list[list]:
        """[x, y, size, score] per crop, the grid CSV's rows."""
        return [[f"{x:.2f}", f"{y:.2f}", f"{size:.2f}", f"{score:.6f}"] for (x, y, size), score
                in zip(self.boxes, self.scores)]


def render_quality_map(image: Image.Image, qmap: QualityMap, alpha: float = 0.6) -> Image.Image:
    """Two panels: the image, and the map over a grey copy of it (each pixel coloured by the mean
    score of the crops covering it), a colour bar on the score scale, the final score in the title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = qmap.image_size
    lo, hi = qmap.scale
    panel = 4.0  # inches per panel
    fig = Figure(figsize=(2 * panel + 1.2, panel * height / width + 1.0), dpi=DPI)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    extent = (0, width, height, 0)
    left.imshow(image.convert("RGB"), extent=extent)
    right.imshow(image.convert("L"), cmap="gray", extent=extent, vmin=0, vmax=255)
    shown = right.imshow(qmap.pixel_map(), cmap=COLOURS, vmin=lo, vmax=hi, alpha=alpha, extent=extent,
                         interpolation="nearest")
    for ax in (left, right):
        ax.set_axis_off()
    right.set_title(f"{len(qmap.scores)} crops, {min(qmap.scores):.2f}..{max(qmap.scores):.2f}", fontsize=9)
    left.set_title(f"global view {qmap.global_score:.2f}", fontsize=9)
    title = f"score {qmap.score:.2f} on {lo:g}..{hi:g}"
    if qmap.prompt:
        prompt = qmap.prompt if len(qmap.prompt) <= 80 else qmap.prompt[:77] + "..."
        title = f"{title}: '{prompt}'"
    fig.suptitle(title, fontsize=11)
    bar = fig.colorbar(shown, ax=right, fraction=0.046, pad=0.03)
    bar.solids.set_alpha(1)
    bar.set_label("crop score (mean of the crops over each pixel)", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    buffer.seek(0)
    with Image.open(buffer) as drawn:
        return drawn.convert("RGB")
