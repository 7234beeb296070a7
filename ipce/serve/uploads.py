"""The images of a request (API or page): an upload, its decoding, and the error a bad request answers."""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from ipce.datasets.images import decode_rgb
from ipce.errors import DataError


class RequestError(Exception):
    """A bad request: its HTTP status and the one-line message sent back as {"error": ...}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())


@dataclass
class Upload:
    """One image of a request: its bytes and how messages name it (`images[2] (cat.png)`)."""
    data: bytes
    label: str
    name: str | None = None


def decode_upload(upload: Upload) -> Image.Image:
    """The upload as an RGB image, or a RequestError (422) naming it: the checks a file gets
    (ipce.datasets.images), on the bytes in memory."""
    try:
        return decode_rgb(upload.data, upload.label)
    except DataError as exc:
        raise RequestError(422, exc.message) from None


def decode_uploads(uploads: list[Upload]) -> tuple[dict[int, Image.Image], list[dict]]:
    """({index: RGB image} of the uploads that decode, [{"index", "name", "error"}] of the others):
    a bad image among good ones is named and the rest scored; a RequestError (422) naming each when
    none decodes."""
    images, failed = {}, []
    for i, upload in enumerate(uploads):
        try:
            images[i] = decode_upload(upload)
        except RequestError as exc:
            failed.append({"index": i, "name": upload.name or upload.label, "error": exc.message})
    if not images:
        raise RequestError(422, "; ".join(f["error"] for f in failed))
    return images, failed
