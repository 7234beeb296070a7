"""The one reading of `--device auto|cpu|cuda|cuda:N` (train, predict, score, demo and the API)."""
from __future__ import annotations

import re

from ipce.errors import IpceError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(device: str | None) -> str:
    """'auto' (or None/''): 'cuda' when a CUDA device is available, else 'cpu'; 'cpu', 'cuda' and
    'cuda:N' as given, once checked against this machine. Anything else raises IpceError."""
    import torch

    name = (str(device) if device is not None else "").strip().lower()
    if name in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise IpceError(f"--device {device}: use {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise IpceError(f"--device {device}: no CUDA device is available here; use --device cpu or auto")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise IpceError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                        f"numbered from 0")
    return name
