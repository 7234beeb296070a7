"""Opening and validating image files.

`open_rgb(path)` is the one way the package opens an image: it returns a fully
decoded 8-bit RGB `PIL.Image.Image` or raises `DataError` (one line naming the
file) with a `.kind` attribute from `PROBLEM_KINDS`.

Conversion rules (documented behaviour):
- Transparency (RGBA, LA, La, PA, RGBa, or a palette/grey/RGB image with a
  `transparency` entry) is composited on a WHITE background.
- 16-bit greyscale (`I;16*`) and 32-bit integer (`I`) images are taken as
  0..65535 and scaled to 8 bits (`round(v / 257)`, so 65535 -> 255, 257 -> 1).
- 32-bit float (`F`) images are taken as 0..1 when every value lies in [0, 1],
  otherwise as 0..255; values outside the range are clipped.
- Everything else (P, L, 1, CMYK, YCbCr, LAB, HSV, RGBX, ...) uses Pillow's
  own conversion to RGB. The EXIF orientation is NOT applied (the published
  models were trained on the pixels as stored).
- Multi-frame files (GIF, TIFF) give their first frame.

Truncated files are never loaded silently: this module relies on Pillow's
default `ImageFile.LOAD_TRUNCATED_IMAGES = False` and forces a full decode.
Images over `Image.MAX_IMAGE_PIXELS` (Pillow's decompression-bomb limit) are
refused, both above the limit (where Pillow only warns) and above twice the
limit (where Pillow raises).
Known limit: libjpeg repairs some corrupt JPEG data without reporting it, so a
JPEG with damaged entropy-coded data can decode to garbage without an error.
"""
from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ipce.errors import DataError

__all__ = ["open_rgb", "image_problem", "PROBLEM_KINDS"]

# Short names used in reports, with what they mean.
PROBLEM_KINDS: dict[str, str] = {
    "missing": "the file does not exist",
    "empty": "the file has zero bytes",
    "unreadable": "the path exists but cannot be read (a folder, or no permission)",
    "not-an-image": "the file is not an image Pillow can identify",
    "truncated": "the image data ends early",
    "corrupt": "the image data is damaged and cannot be decoded",
    "too-large": "the image exceeds Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS)",
    "unsupported-mode": "the pixel mode cannot be converted to RGB",
}

_ALPHA_MODES = {"RGBA", "LA", "La", "PA", "RGBa"}
_INT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}

# warnings.catch_warnings changes process-wide state; serialise the (cheap) header
# parse that may warn, so parallel decoding threads cannot undo each other's filter.
_OPEN_LOCK = threading.Lock()


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _INT_MODES:
        values = np.asarray(im, dtype=np.float64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        if mode == "La":  # Pillow has no La -> RGBA path; go through premultiplied RGBa
            im = im.convert("RGBa")
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def open_rgb(path) -> Image.Image:
    """Open `path`, decode it fully and return an 8-bit RGB image.

    Raises `DataError` (with `.kind` in `PROBLEM_KINDS`) naming the path when the
    file is missing, empty, not an image, truncated, corrupt or too large.
    """
    path = Path(path)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; check the path or the --images/--data-root folder",
                        kind="missing", path=path) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the image ({_one_line(exc.strerror or exc)}); check the path",
                        kind="unreadable", path=path) from None
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not an image file; check the image name in the annotations",
                        kind="unreadable", path=path)
    if size == 0:
        raise DataError(f"{path}: image file is empty (0 bytes); re-download or regenerate it",
                        kind="empty", path=path)
    try:
        fh = open(path, "rb")
    except PermissionError as exc:
        raise DataError(f"{path}: cannot read the image ({_one_line(exc.strerror or exc)}); check permissions",
                        kind="unreadable", path=path) from None
    with fh:
        return _decode(fh, path, path)


def decode_rgb(data: bytes, label: str) -> Image.Image:
    """`open_rgb` for image bytes (an upload): the same checks, messages naming `label`."""
    if not data:
        raise DataError(f"{label}: image is empty (0 bytes)", kind="empty")
    return _decode(io.BytesIO(data), label, None)


def _decode(fh, label, path) -> Image.Image:
    """Decode the open file `fh` fully to 8-bit RGB; problems are DataErrors naming `label`."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(fh)
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and im.width * im.height > limit:
            raise Image.DecompressionBombError(
                f"{im.width}x{im.height} = {im.width * im.height} pixels exceeds the limit of {limit}")
        im.load()
        return _to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"{label}: image too large, could be a decompression bomb ({_one_line(exc)}); "
            "shrink the image or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file",
            kind="too-large", path=path) from None
    except UnidentifiedImageError:
        raise DataError(f"{label}: not an image file (Pillow cannot identify it); replace it with the real image",
                        kind="not-an-image", path=path) from None
    except ValueError as exc:
        if "conversion" in str(exc) or "mode" in str(exc):
            raise DataError(f"{label}: cannot convert pixel mode to RGB ({_one_line(exc)}); "
                            "re-save the image as RGB", kind="unsupported-mode", path=path) from None
        raise DataError(f"{label}: corrupt image ({_one_line(exc)}); re-download or regenerate it",
                        kind="corrupt", path=path) from None
    except Exception as exc:  # OSError, SyntaxError, EOFError, struct.error, ... from a damaged file
        text = _one_line(exc) or type(exc).__name__
        kind = "truncated" if ("truncated" in text.lower() or isinstance(exc, EOFError)) else "corrupt"
        what = "truncated image" if kind == "truncated" else "corrupt image"
        raise DataError(f"{label}: {what} ({text}); re-download or regenerate it",
                        kind=kind, path=path) from None


def image_problem(path) -> tuple[str, str] | None:
    """None when `open_rgb(path)` succeeds, else its problem as `(kind, one-line message)`."""
    try:
        open_rgb(path)
    except DataError as exc:
        return getattr(exc, "kind", "corrupt"), str(exc)
    return None
