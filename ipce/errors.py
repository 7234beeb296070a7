"""Errors meant for the user: the CLI prints them as one line, without a traceback."""
from __future__ import annotations

import string
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


class _Name:
    """A parameter's name in a `ParameterError` template: `{combine}` is `combine=` in Python and
    `--combine` on the command line; `{runtime:=}` (a value follows) is `runtime=` and `--runtime `."""

    def __init__(self, name: str, flag: str | None):
        self.name, self.flag = name, flag

    def __format__(self, spec: str) -> str:
        if self.flag is None:
            return f"{self.name}="
        return self.flag + (" " if spec == "=" else "")


class ParameterError(IpceError):
    """A bad argument of the Python API. `str()` names the parameters as Python spells them
    (`combine=`, `runtime=x`); `with_flags()` is the same line with command-line flags
    (`--combine`, `--runtime x`), which the CLI prints. `template` marks each parameter in braces,
    `values` fill the other fields."""

    def __init__(self, template: str, **values):
        self.template, self.values = template, values
        fields = {field for _, field, _, _ in string.Formatter().parse(template) if field}
        self.params = sorted(fields - set(values))
        super().__init__(self._render({}))

    def _render(self, flags: dict) -> str:
        return self.template.format(**self.values, **{n: _Name(n, flags.get(n)) for n in self.params})

    def with_flags(self, rename: dict[str, str] | None = None) -> str:
        """The message with each parameter as its flag: `--` + the name with `-` for `_`, unless `rename`
        gives another."""
        rename = rename or {}
        return self._render({n: rename.get(n, "--" + n.replace("_", "-")) for n in self.params})

    def __reduce__(self):  # pickles with its template and values
        return (partial(type(self), **self.values), (self.template,), self.__dict__)


class WeightsError(IpceError):
    """Missing or unreadable model weights / checkpoints."""
