"""Progress bars: every bar of ipce comes from `progress_bar`, so that a caller can switch them all off.

A command's `--no-progress` switches off its own bars (`enabled=False`); a Python caller (a notebook, a
pipeline, a server) switches off every bar with `set_progress(False)` or the environment variable
`IPCE_PROGRESS=0`.
"""
from __future__ import annotations

import os

from tqdm.auto import tqdm

_SWITCH = {"on": os.environ.get("IPCE_PROGRESS", "1") not in ("0", "false", "no", "off")}


def set_progress(enabled: bool) -> None:
    """Show (True) or hide (False) every progress bar of ipce from now on."""
    _SWITCH["on"] = bool(enabled)


def progress_enabled() -> bool:
    return _SWITCH["on"]


def progress_bar(iterable=None, *, enabled: bool = True, **options) -> tqdm:
    """A tqdm bar (iterable or `total=`), shown only when `enabled` and bars are on (`set_progress`);
    its width follows the terminal. `options` go to tqdm (desc, unit, total, leave, initial, ...)."""
    return tqdm(iterable, disable=not (enabled and _SWITCH["on"]), dynamic_ncols=True, **options)

