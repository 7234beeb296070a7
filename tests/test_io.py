"""The one atomic writer: exact bytes, the permissions of a plain open(), nothing left behind on failure."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from ipce.cli import main
from ipce.utils.io import atomic_file, save_torch, write_bytes, write_csv, write_json, write_text
from tests.datagen import brightness_dataset, tiny_flags


@pytest.fixture
def umask():
    """Set the umask for one test: ``umask(0o022)``; the old one is restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def _safetensors(path: Path) -> None:
    """A writer that replaces the file it is given by one of its own, made 0o600 (safetensors does)."""
    from safetensors.torch import save_file

    with atomic_file(path) as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp))


class Unpicklable:
    def __reduce__(self):
        raise ValueError("cannot be pickled")


WRITERS = {
    "write_bytes": lambda p: write_bytes(p, b"\x00\x01"),
    "write_text": lambda p: write_text(p, "a\n"),
    "write_csv": lambda p: write_csv(p, ["a", "b"], [[1, 2]]),
    "write_json": lambda p: write_json(p, {"a": 1}),
    "save_torch": lambda p: save_torch(p, {"a": torch.ones(1)}),
    "atomic_file": _safetensors,
}


@pytest.mark.parametrize("name", WRITERS)
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_every_writer_gives_the_mode_of_a_plain_open(tmp_path, umask, name, mask, mode):
    umask(mask)
    path = tmp_path / "sub" / "out.bin"  # the parent folder is created
    WRITERS[name](path)
    assert _mode(path) == mode
    WRITERS[name](path)  # over an existing file too
    assert _mode(path) == mode
    assert _leftovers(path.parent, {"out.bin"}) == []


def test_each_writer_returns_the_path_and_writes_exact_bytes(tmp_path):
    assert write_bytes(tmp_path / "b", b"\r\n\x00") == tmp_path / "b"
    assert (tmp_path / "b").read_bytes() == b"\r\n\x00"
    assert write_text(str(tmp_path / "t"), "x\r\ny ± 1\n") == tmp_path / "t"
    assert (tmp_path / "t").read_bytes() == "x\r\ny ± 1\n".encode()  # no newline translation
    write_csv(tmp_path / "c.csv", ["name", "prompt"], [["a,b", 'say "hi"\nthen'], ["c", None]])
    assert (tmp_path / "c.csv").read_bytes() == b'name,prompt\n"a,b","say ""hi""\nthen"\nc,\n'
    write_csv(tmp_path / "n.csv", None, [[1, 2.5]])
    assert (tmp_path / "n.csv").read_bytes() == b"1,2.5\n"
    write_json(tmp_path / "j.json", {"é": float("nan"), "t": (1, float("inf"))})
    assert (tmp_path / "j.json").read_text(encoding="utf-8") == '{\n  "é": null,\n  "t": [\n    1,\n    null\n  ]\n}\n'
    write_json(tmp_path / "k.json", [1], indent=None, fsync=True)
    assert (tmp_path / "k.json").read_bytes() == b"[1]\n"
    save_torch(tmp_path / "s.pt", {"w": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "s.pt", weights_only=True)["w"], torch.arange(3))


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, error):
    path = tmp_path / "m.json"
    write_json(path, {"a": 1})
    with pytest.raises(error), atomic_file(path) as tmp:
        tmp.write_bytes(b"partial")
        raise error("stop")
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})  # JSON cannot hold it: nothing is written
    with pytest.raises(ValueError, match="cannot be pickled"):
        save_torch(path, {"a": Unpicklable()})  # fails inside torch.save, after the file was opened
    assert json.loads(path.read_text()) == {"a": 1}
    assert _leftovers(tmp_path, {"m.json"}) == []


def test_a_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_file(tmp_path / "new.csv") as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_training_run_writes_every_file_readable_by_all(tmp_path, umask):
    annotations, images = brightness_dataset(tmp_path / "data", n=20)
    umask(0o022)
    out = tmp_path / "run"
    assert main(["train", *tiny_flags(annotations, images, out, epochs=1), "--keep-last"]) == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    suffixes = {p.suffix for p in files}
    assert {".safetensors", ".csv", ".json", ".jsonl", ".png", ".pt", ".md"} <= suffixes, suffixes
    assert (out / "split1" / "last.pt").is_file()
    assert {p.relative_to(out).as_posix(): oct(_mode(p)) for p in files if _mode(p) != 0o644} == {}
    assert [p.name for p in files if p.name.startswith(".") or p.name.endswith(".tmp")] == []
