"""Errors meant for the user: the CLI prints them as one line, without a traceback."""
from __future__ import annotations

from functools import partial


class IpceError(Exception):
    """A user-facing problem (bad input, missing file, wrong flag). The message is one line
    that names the file, row or flag and, where there is one, the fix."""


class DataError(IpceError):
    """An annotation file or an image that cannot be used.

    `kind` names the problem (`missing`, `bad-score`, `bad-option`, ...: a short name as in
    `ipce.datasets.images.PROBLEM_KINDS`), `path` is the file it is in (a `str`) and `row` its
    1-based row, when known. `message` is the text collapsed to one line; `details`, when given,
    are lines shown under it as they are (e.g. one per bad record)."""

    def __init__(self, message, *, kind: str = "data", path=None, row: int | None = None, details=()):
        self.message = " ".join(str(message).split())
        self.kind = kind
        self.path = None if path is None else str(path)
        self.row = row
        self.details = tuple(details)
        super().__init__(self.message + "".join(f"\n  {line}" for line in self.details))

    def __reduce__(self):  # pickles with its fields (the default would pass only the text)
        return (partial(type(self), kind=self.kind, path=self.path, row=self.row, details=self.details),
                (self.message,), self.__dict__)


class WeightsError(IpceError):
    """Missing or unreadable model weights / checkpoints."""
