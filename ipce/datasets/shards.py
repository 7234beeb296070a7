"""Records that live in shards: WebDataset tar files and Parquet files, read one shard at a time
(the `shards` extra: webdataset, pyarrow), and the blocks of views a scorer takes from them.

A shard is read as a stream of `Sample`s in the order it stores them; nothing of a shard is
held but the block being decoded. A WebDataset sample is the tar members that share a key
(`00042.jpg`, `00042.txt`, `00042.json`): the image is its `jpg`, `jpeg`, `png` or `webp`
member, the prompt its `txt` member or, with `prompt_key`, a field of its `json` member. A
Parquet row has a prompt column and an image column of bytes, of paths (relative to the
Parquet file's folder), or of structs {bytes, path} (as Hugging Face datasets write images).
A sample that cannot be used (no image member, no prompt, image bytes Pillow cannot decode)
carries its problem, named by shard and key, and the others are scored.

`ShardBlocks` cuts a shard into blocks of `batch_size` consecutive samples (block b: samples
b*batch_size ... (b+1)*batch_size - 1), each decoded into the views of every view config; with
DataLoader workers, worker w of W decodes blocks w, w+W, ..., so the loader hands them back in
order and a block is the same batch whichever process reads it.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ipce.errors import DataError, IpceError

IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")
EXTRA = "pip install 'ipce[shards]'"


@dataclass
class Sample:
    """One record of a shard: where its image is (bytes or a path), its prompt, or its problem."""
    key: str
    prompt: str | None = None
    data: bytes | None = None
    path: Path | None = None
    problem: str | None = None   # why it cannot be scored (then no image is read)
    member: str = ""             # where the image came from, for messages: "jpg", a column name


def need(module: str):
    """Import `module` of the shards extra, or one line saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise IpceError(f"reading shards needs {module.split('.')[0]}: {EXTRA}") from None


def expand_shards(pattern: str, flag: str) -> list[Path]:
    """The shard files of a brace pattern ("shards/{00000..00127}.tar", "a.tar,b.tar" is not one:
    use "{a,b}.tar"), each checked to exist, in the pattern's order, without repeats."""
    braceexpand = need("braceexpand").braceexpand
    paths = list(dict.fromkeys(Path(p) for p in braceexpand(pattern)))
    if not paths:
        raise IpceError(f"{flag} {pattern!r}: names no file")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{flag}: shard {missing[0]} not found{more}; check the pattern {pattern!r}",
                        kind="missing-file", path=missing[0])
    return paths


# ----------------------------------------------------------------------------- WebDataset

def _member_text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"its {what} member is not UTF-8 text") from None


def _prompt_of(sample: dict, prompt_key: str | None) -> str:
    """The prompt of a WebDataset sample: its txt member, or the json member's field `prompt_key`."""
    if prompt_key is None:
        if "txt" not in sample:
            raise ValueError("no txt member (the prompt); give --prompt-key FIELD to read it from the json member")
        return _member_text(sample["txt"], "txt")
    if "json" not in sample:
        raise ValueError(f"no json member to read --prompt-key {prompt_key!r} from")
    try:
        meta = json.loads(_member_text(sample["json"], "json"))
    except json.JSONDecodeError as err:
        raise ValueError(f"its json member is not JSON ({err.msg} at line {err.lineno})") from None
    value = meta.get(prompt_key) if isinstance(meta, dict) else None
    if not isinstance(value, str):
        raise ValueError(f"its json member has no text field {prompt_key!r}")
    return value.strip()


def webdataset_samples(shard: Path, prompt_key: str | None = None) -> Iterator[Sample]:
    """The samples of one WebDataset tar shard, in the order the tar stores them."""
    tariterators = need("webdataset.tariterators")
    try:
        for raw in tariterators.tarfile_samples([{"url": str(shard)}]):
            key = raw["__key__"]
            image = next((m for m in IMAGE_MEMBERS if m in raw), None)
            try:
                prompt = _prompt_of(raw, prompt_key)
                if image is None:
                    found = ", ".join(sorted(k for k in raw if not k.startswith("__"))) or "none"
                    raise ValueError(f"no image member ({', '.join(IMAGE_MEMBERS)}; it has {found})")
            except ValueError as err:
                yield Sample(key=key, problem=f"{shard}, key {key}: {err}")
                continue
            yield Sample(key=key, prompt=prompt, data=raw[image], member=image)
    except (OSError, ValueError) as err:  # a tar file damaged past its last good member
        raise DataError(f"{shard}: not a readable tar shard ({' '.join(str(err).split())}); "
                        "re-download or rewrite it", kind="unreadable", path=shard) from None


# ----------------------------------------------------------------------------- Parquet

def parquet_columns(shard: Path, prompt_col: str, image_col: str, key_col: str | None):
    """Check that the columns exist (one line naming the file and the columns it has)."""
    pq = need("pyarrow.parquet")
    try:
        names = pq.ParquetFile(shard).schema_arrow.names
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...
        raise DataError(f"{shard}: not a readable Parquet file ({' '.join(str(err).split())})", kind="unreadable",
                        path=shard) from None
    for flag, col in (("--prompt-col", prompt_col), ("--image-col", image_col), ("--key-col", key_col)):
        if col is not None and col not in names:
            raise IpceError(f"{shard}: no column {col!r} ({flag}); it has {', '.join(names)}")


def _parquet_image(value, base: Path) -> tuple[bytes | None, Path | None, str | None]:
    """(bytes, path, the path as written) of an image cell: bytes, a path, or a {bytes, path} struct."""
    written = None
    if isinstance(value, dict):
        written = value.get("path") or None
        if value.get("bytes"):
            return value["bytes"], None, written
        value = written
    if isinstance(value, (bytes, bytearray)) and value:
        return bytes(value), None, None
    if isinstance(value, str) and value:
        path = Path(value)
        return None, path if path.is_absolute() else base / path, value
    raise ValueError("no image (an empty cell)")


def parquet_samples(shard: Path, prompt_col: str = "prompt", image_col: str = "image",
                    key_col: str | None = None, rows_per_read: int = 256) -> Iterator[Sample]:
    """The rows of one Parquet file as samples, read `rows_per_read` rows at a time. The key is the
    `key_col` cell, else the image path as written, else the row number (0-based)."""
    pq = need("pyarrow.parquet")
    parquet_columns(shard, prompt_col, image_col, key_col)
    columns = list(dict.fromkeys(c for c in (key_col, prompt_col, image_col) if c))
    row = 0
    for batch in pq.ParquetFile(shard).iter_batches(batch_size=rows_per_read, columns=columns):
        table = batch.to_pydict()
        for i in range(batch.num_rows):
            key = str(table[key_col][i]) if key_col else str(row)
            try:
                data, path, written = _parquet_image(table[image_col][i], shard.parent)
                key = key if key_col or written is None else written
                prompt = table[prompt_col][i]
                if not isinstance(prompt, str):
                    raise ValueError(f"no prompt (column {prompt_col!r} is empty)")
            except ValueError as err:
                yield Sample(key=key, problem=f"{shard}, key {key}: {err}")
            else:
                yield Sample(key=key, prompt=prompt.strip(), data=data, path=path, member=image_col)
            row += 1


# ----------------------------------------------------------------------------- a shard as a source

@dataclass(frozen=True)
class ShardSource:
    """How to read one shard: its file and form, and the options of its form."""
    path: Path
    form: str                      # "webdataset" or "parquet"
    prompt_key: str | None = None  # webdataset: the json field of the prompt (None: the txt member)
    prompt_col: str = "prompt"     # parquet
    image_col: str = "image"
    key_col: str | None = None

    def samples(self) -> Iterator[Sample]:
        if self.form == "webdataset":
            return webdataset_samples(self.path, self.prompt_key)
        return parquet_samples(self.path, self.prompt_col, self.image_col, self.key_col)

    def options(self) -> dict:
        """The reading options a score depends on (the settings sidecar's)."""
        if self.form == "webdataset":
            return {"form": "webdataset", "prompt_key": self.prompt_key}
        return {"form": "parquet", "prompt_col": self.prompt_col, "image_col": self.image_col,
                "key_col": self.key_col}


# ----------------------------------------------------------------------------- blocks of views

def decode_sample(sample: Sample, shard: Path):
    """The RGB image of a usable sample (DataError naming shard and key when it does not decode)."""
    from ipce.datasets.images import decode_rgb, open_rgb

    if sample.data is not None:
        return decode_rgb(sample.data, f"{shard}, key {sample.key} ({sample.member})")
    try:
        return open_rgb(sample.path)
    except DataError as err:
        raise DataError(f"{shard}, key {sample.key}: {err}", kind=getattr(err, "kind", None)) from None


def _blocks(samples: Iterator[Sample], size: int) -> Iterator[list[Sample]]:
    block = []
    for sample in samples:
        block.append(sample)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


@dataclass
class ShardBlock:
    """One block of a shard: its samples' keys and prompts in order, the views of the usable ones
    ({ViewConfig: (crops [B, P, 3, 224, 224], global views [B, 3, 224, 224])}), and the problems."""
    number: int
    keys: list[str]
    prompts: list[str | None]
    good: list[int]                 # positions in the block of the samples with views, in order
    views: dict
    problems: dict[int, str]        # position in the block -> one-line problem


def make_block(number: int, samples: Sequence[Sample], shard: Path, configs) -> ShardBlock:
    """Decode a block's images into the evaluation views of every config (crop positions are fixed in
    evaluation, so no seed is needed)."""
    from ipce.models.views import make_views
    from ipce.utils.stream import one_line

    problems, good, views = {}, [], {cfg: ([], []) for cfg in configs}
    for i, sample in enumerate(samples):
        if sample.problem:
            problems[i] = one_line(sample.problem)
            continue
        try:
            image = decode_sample(sample, shard)
        except DataError as err:
            problems[i] = one_line(str(err))
            continue
        good.append(i)
        for cfg in configs:
            crops, global_view = make_views(image, cfg)
            views[cfg][0].append(crops)
            views[cfg][1].append(global_view)
    stacked = {cfg: (torch.stack(c), torch.stack(g)) for cfg, (c, g) in views.items() if c}
    return ShardBlock(number, [s.key for s in samples], [s.prompt for s in samples], good, stacked, problems)


class ShardBlocks(IterableDataset):
    """The blocks of one shard as an iterable dataset for a DataLoader (batch_size=None): worker w of
    W decodes blocks w, w+W, ... and skips the others' samples undecoded."""

    def __init__(self, source: ShardSource, configs, batch_size: int):
        self.source, self.configs, self.batch_size = source, list(configs), batch_size

    def __iter__(self) -> Iterator[ShardBlock]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for number, samples in enumerate(_blocks(self.source.samples(), self.batch_size)):
            if number % workers == worker:
                yield make_block(number, samples, self.source.path, self.configs)


def shard_loader(source: ShardSource, configs, batch_size: int, workers: int) -> DataLoader:
    """A DataLoader over the blocks of `source`, in block order."""
    return DataLoader(ShardBlocks(source, configs, batch_size), batch_size=None, num_workers=workers,
                      collate_fn=_identity, prefetch_factor=2 if workers > 0 else None)


def _identity(block: ShardBlock) -> ShardBlock:
    return block
