"""`ipce export`: a model folder (model.safetensors, config.json, README.md) that loads and scores exactly as
its checkpoint, with a model card holding the run's real metrics."""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

import ipce
from ipce.cli import main
from ipce.errors import WeightsError
from ipce.engine.card import CARD_METRICS, fmt, results_table
from ipce.models.backbone import infer_config
from ipce.models.checkpoint import read_metadata, save_checkpoint
from ipce.presets.registry import paper_results

PAPER_RESULTS = paper_results()
from tests.conftest import make_tiny_scorer
from tests.datagen import brightness_dataset, tiny_flags


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real two-split run of the tiny backbone: (run folder, images folder)."""
    root = tmp_path_factory.mktemp("export-run")
    annotations, images = brightness_dataset(root / "data", n=24)
    out = root / "run"
    flags = tiny_flags(annotations, images, out, epochs=1)
    flags[flags.index("--splits") + 1] = "1,2"
    assert main(["train", *flags]) == 0
    return out, images


def card_table(card: str) -> dict[str, list[str]]:
    """The card's results table: metric name -> its cells after the name."""
    rows = [line for line in card.splitlines() if line.startswith("| ")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in rows)}


@pytest.mark.slow
def test_exported_folder_scores_exactly_like_its_checkpoint(run, tmp_path, capsys):
    out, images = run
    checkpoint = out / "split2" / "best.safetensors"
    folder = tmp_path / "model"
    assert main(["export", str(checkpoint), "--out", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    original, exported = load_file(str(checkpoint)), load_file(str(folder / "model.safetensors"))
    assert original.keys() == exported.keys() and all(torch.equal(original[k], exported[k]) for k in original)

    config = json.loads((folder / "config.json").read_text())
    meta = read_metadata(checkpoint)
    for key in ("backbone", "model_config", "template", "levels", "resize", "patches", "mos_range", "training",
                "epoch"):
        assert config[key] == meta[key], key
    # JSON has no NaN: an undefined metric (a failed logistic fit) is null in config.json
    assert config["metrics"] == {k: None if v != v else v for k, v in meta["metrics"].items()}
    assert config["split"] == 2 and config["run_summary"] == json.loads((out / "summary.json").read_text())

    names = sorted(images.iterdir())[:5]
    assert ipce.load_scorer(folder).score(names, "a photo") == ipce.load_scorer(checkpoint).score(names, "a photo")
    capsys.readouterr()
    # a command's --checkpoint DIR: the same table as the checkpoint's
    printed = []
    for source in (folder, checkpoint):
        assert main(["score", *map(str, names), "--prompt", "a photo", "--checkpoint", str(source), "--device", "cpu"]) == 0
        printed.append(capsys.readouterr().out)
    # a header, one row per image, then the prompt and what the score means
    assert printed[0] == printed[1] and len(printed[0].splitlines()) == 1 + len(names) + 2

    # exported again from the folder: the same weights, the card still from the run
    again = tmp_path / "again"
    assert main(["export", str(folder), "--out", str(again)]) == 0
    assert (again / "README.md").read_text() == (folder / "README.md").read_text()


@pytest.mark.slow
def test_model_card_metrics_read_back_equal_the_runs_summary(run, tmp_path):
    out, _ = run
    folder = tmp_path / "model"
    assert main(["export", str(out / "split1" / "best.safetensors"), "--out", str(folder)]) == 0
    card = (folder / "README.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    own = read_metadata(out / "split1" / "best.safetensors")["metrics"]
    table = card_table(card)
    assert "mean ± std over 2 splits" in card
    for key, name in CARD_METRICS:
        stats = summary["summary"][key]
        this, spread, extent, paper = table[name]
        assert this == fmt(own[key])
        assert spread == f"{fmt(stats['mean'])} ± {fmt(stats['std'])}"
        assert extent == f"{fmt(stats['min'])} – {fmt(stats['max'])}"
        assert paper == "n/a"  # custom data: the paper has no row
    assert card.startswith("---\nlicense: mit\n") and "random weights" in card
    assert "annotations.csv" in card and "split 1's best epoch" in card and "ipce.load_scorer" in card


def test_card_puts_the_papers_numbers_beside_the_runs():
    srcc, plcc = PAPER_RESULTS[("agiqa3k", "quality")]
    stats = {"srcc": {"mean": 0.87, "std": 0.01, "min": 0.85, "max": 0.89, "n": 10},
             "plcc": {"mean": 0.91, "std": 0.02, "min": 0.88, "max": 0.93, "n": 10}}
    table = card_table(results_table({"metrics": {"srcc": 0.88}}, {"summary": stats,
                                                                  "paper": {"srcc": srcc, "plcc": plcc}}))
    assert table["SRCC"] == ["0.8800", "0.8700 ± 0.0100", "0.8500 – 0.8900", fmt(srcc)]
    assert table["PLCC"][3] == fmt(plcc) and table["KRCC"][1:] == ["n/a", "n/a", "n/a"]


def test_whatever_the_checkpoint_records_reaches_config_and_card(tmp_path):
    model = make_tiny_scorer(seed=3)
    recorded = {"trained_on": {"dataset": "agiqa3k", "pairs": 1234}, "precision": "bf16"}
    checkpoint = save_checkpoint(tmp_path / "ckpt.safetensors", model,
                                 {"backbone": "tiny", "model_config": infer_config(model.clip.state_dict()), **recorded})
    folder = tmp_path / "model"
    assert main(["export", str(checkpoint), "--out", str(folder)]) == 0
    config = json.loads((folder / "config.json").read_text())
    card = (folder / "README.md").read_text()
    assert config["trained_on"] == recorded["trained_on"] and config["precision"] == "bf16"
    assert '`trained_on`: `{"dataset": "agiqa3k", "pairs": 1234}`' in card
    assert "precision bf16" in card and "run's summary.json was not given" in card


def test_export_refuses_foreign_files_and_occupied_folders(tmp_path, capsys):
    model = make_tiny_scorer()
    bare = tmp_path / "bare.pt"
    torch.save(model.clip.state_dict(), bare)
    assert main(["export", str(bare), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "not an ipce checkpoint" in err and len(err.strip().splitlines()) == 1
    checkpoint = save_checkpoint(tmp_path / "c.safetensors", model,
                                 {"backbone": "tiny", "model_config": infer_config(model.clip.state_dict())})
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["export", str(checkpoint), "--out", str(busy)]) == 1
    assert "not a model folder" in capsys.readouterr().err and (busy / "notes.txt").read_text() == "mine"
    broken = tmp_path / "broken"
    assert main(["export", str(checkpoint), "--out", str(broken)]) == 0
    (broken / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match=re.escape("model.safetensors: missing")):
        ipce.load_scorer(broken)
    shutil.rmtree(broken)
