"""Errors meant for the user: the CLI prints them as one line, without a traceback."""


class IpceError(Exception):
    """A user-facing problem (bad input, missing file, wrong flag). The message is one line
    that names the file, row or flag and, where there is one, the fix."""


class DataError(IpceError):
    """An annotation file or an image that cannot be used."""


class WeightsError(IpceError):
    """Missing or unreadable model weights / checkpoints."""
