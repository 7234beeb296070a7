"""`Problem`: one thing wrong with a dataset (a row, an image or a split file), as reported to the user."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Problem"]


@dataclass(frozen=True)
class Problem:
    path: str          # the file the problem is in (annotation file, image, split file)
    row: int | None    # 1-based row of that file, when it is a row
    kind: str          # short name: bad-score, empty-prompt, duplicate, missing, truncated, ...
    message: str       # one line naming the file (and row) and the fix
    image: str = ""    # the image the row or file is for, as the annotations name it ("" when unknown)

    def where(self) -> str:
        """' (row 15, image "cat.png")': the row and the image this problem is for, as far as known."""
        parts = [f"row {self.row}"] if self.row is not None else []
        parts += [f"image {self.image!r}"] if self.image else []
        return f" ({', '.join(parts)})" if parts else ""

    @classmethod
    def of(cls, err: Exception) -> "Problem":
        """The problem a `DataError` describes (its kind, path and row when it has them)."""
        return cls(path=str(getattr(err, "path", None) or ""), row=getattr(err, "row", None),
                   kind=getattr(err, "kind", None) or "annotation", message=str(err))
