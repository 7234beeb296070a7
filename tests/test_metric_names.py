"""Runs written while (SRCC+PLCC)/2 was called `main` resume and summarize under its name now."""
from __future__ import annotations

import json

import pytest
import torch

from ipce.cli import main
from ipce.utils.metrics import RENAMED_KEYS, with_current_names
from tests.datagen import brightness_dataset, tiny_flags


def as_written_before(record: dict) -> dict:
    """`record` with its metric keys under the names older runs wrote."""
    before = {new: old for old, new in RENAMED_KEYS.items()}
    return {before.get(k, k): v for k, v in record.items()}


def test_old_names_are_read_under_the_current_ones():
    old = {"epoch": 3, "srcc": 0.7, "main": 0.75, "val_main": 0.8}
    assert with_current_names(old) == {"epoch": 3, "srcc": 0.7, "srcc_plcc_mean": 0.75, "val_srcc_plcc_mean": 0.8}
    assert "main" in old  # a copy: the record read is left as it was


@pytest.mark.slow
def test_resume_from_a_state_that_says_main(tmp_path):
    annotations, images = brightness_dataset(tmp_path / "data", n=20)
    out = tmp_path / "run"
    assert main(["train", *tiny_flags(annotations, images, out, epochs=1), "--keep-last"]) == 0
    split = out / "split1"
    # the run as an older ipce left it after epoch 1 of 2: "main" in last.pt's history and best
    state = torch.load(split / "last.pt", map_location="cpu", weights_only=True)
    first = state["history"][0]
    state["history"] = [as_written_before(h) for h in state["history"]]
    state["best"] = as_written_before(state["best"])
    assert "main" in state["best"] and "srcc_plcc_mean" not in state["best"]
    torch.save(state, split / "last.pt")
    (split / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in state["history"]))
    (split / "result.json").unlink()
    (out / "summary.json").unlink()
    saved = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**saved, "epochs": 2}))

    assert main(["train", "--resume", "--out", str(out)]) == 0
    history = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all("srcc_plcc_mean" in h and "main" not in h for h in history)
    assert history[0]["srcc_plcc_mean"] == first["srcc_plcc_mean"]
    best = json.loads((out / "summary.json").read_text())["splits"][0]
    assert best["srcc_plcc_mean"] == max(h["srcc_plcc_mean"] for h in history)

    # a finished split whose result.json says "main" is summarized under the current name
    result = json.loads((split / "result.json").read_text())
    (split / "result.json").write_text(json.dumps(as_written_before(result)))
    assert main(["train", "--resume", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"][0]["srcc_plcc_mean"] == result["srcc_plcc_mean"]
    assert summary["summary"]["srcc_plcc_mean"]["n"] == 1
