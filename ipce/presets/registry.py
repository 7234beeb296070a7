"""The bundled dataset registry (presets.toml): one entry per dataset, read once.

Everything else that knows a dataset fact derives it from here: the training recipe (`recipe`,
TrainConfig's defaults), the published files and columns (`data`, datasets.sources.DATASETS), the
paper's numbers (`paper_result`), the rows of `ipce reproduce` (`reproduce_rows`) and the header of
the original split files (`original_split_header`). User registry files are read on top of it by
ipce.config.load_presets, which checks their recipe keys against TrainConfig.
"""
from __future__ import annotations

import copy
import functools
import tomllib
from importlib import resources

# Keys of an entry that are facts about the dataset rather than recipe settings (TrainConfig fields).
FACT_KEYS = ("data", "paper", "reproduce", "original_split_header")
# The preset a run uses when none is named; TrainConfig's defaults are its recipe.
DEFAULT_PRESET = "agiqa1k"
# The seed of the random splits (and of everything else a run draws) unless --seed says otherwise.
SPLIT_SEED = 20200626


@functools.cache
def _bundled() -> dict[str, dict]:
    text = resources.files("ipce.presets").joinpath("presets.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def bundled() -> dict[str, dict]:
    """Every bundled entry, in the file's order (a copy: callers may change it)."""
    return copy.deepcopy(_bundled())


def recipe(entry: dict) -> dict:
    """An entry's training recipe: its keys other than the dataset facts."""
    return {k: v for k, v in entry.items() if k not in FACT_KEYS}


def data_tables() -> dict[str, dict]:
    """name -> the [name.data] table of each bundled published dataset."""
    return {name: copy.deepcopy(entry["data"]) for name, entry in _bundled().items() if "data" in entry}


def paper_result(name: str, target: str) -> tuple[float, float] | None:
    """(SRCC, PLCC) published by Peng et al. for bundled dataset `name`'s `target`, or None."""
    value = _bundled().get(name, {}).get("paper", {}).get(target)
    return (float(value[0]), float(value[1])) if value is not None else None


def paper_results() -> dict[tuple[str, str], tuple[float, float]]:
    """(name, target) -> (SRCC, PLCC) for every published number of the bundled entries."""
    return {(name, target): paper_result(name, target)
            for name, entry in _bundled().items() for target in entry.get("paper", {})}


def reproduce_rows() -> tuple[str, ...]:
    """'name:target' of every row `ipce reproduce` runs by default, in the file's order."""
    return tuple(f"{name}:{target}" for name, entry in _bundled().items() for target in entry.get("reproduce", ()))


def original_split_header(name: str) -> tuple[str, ...] | None:
    """The header of `name`'s exported original split files (None: header-less, as the originals)."""
    header = _bundled()[name].get("original_split_header")
    return tuple(header) if header is not None else None


def with_original_splits() -> tuple[str, ...]:
    """The bundled entries whose original split files ship with ipce (presets/splits/NAME.json.xz)."""
    folder = resources.files("ipce.presets").joinpath("splits")
    return tuple(name for name in _bundled() if folder.joinpath(f"{name}.json.xz").is_file())
