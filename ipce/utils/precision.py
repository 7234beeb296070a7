"""The one precision switch: the precisions ipce knows and the autocast context of each.

torch is imported only by `autocast`, so that the flag modules can offer PRECISIONS without it.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from ipce.errors import IpceError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "bf16", "fp16")


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision flag (fp32: none)."""
    import torch

    if precision not in PRECISIONS:
        raise IpceError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
