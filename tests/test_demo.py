"""`ipce demo --quick` end to end: data, training, evaluation, report, pair table."""
import json
import math
import re

import numpy as np
import pytest

from ipce.cli import main
from ipce.commands.demo import format_effects
from ipce.demo.synthetic import SyntheticConfig, is_cached
from ipce.demo import pretrain
from ipce.demo import run as demo
from ipce.demo.run import QUICK, QUICK_NOTE, defect_effects, demo_data, pretrained_tiny
from ipce.models.checkpoint import read_metadata


@pytest.mark.slow
def test_demo_quick_runs_end_to_end(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--workers", "0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("srcc", "plcc", "pair_accuracy", "seconds"):
        assert key in summary and math.isfinite(summary[key]), key
    assert 0 <= summary["pair_accuracy"] <= 1 and summary["seconds"] > 0 and summary["quick"] is True
    # an unbiased figure beside the held-out one: a second generated set that chose nothing
    fresh = (out / "data-fresh-40" / "annotations.csv").read_text().splitlines()
    assert summary["fresh_images"] == 40 and len(fresh) == 41 and math.isfinite(summary["fresh_srcc"])
    assert fresh != (out / "data-quick" / "annotations.csv").read_text().splitlines()[:41]
    effects = summary["fresh_effects"]
    assert len(effects) == 8 and sum(e["images"] for e in effects.values()) > 0
    assert all((e["score"] is None) == (e["images"] == 0) for e in effects.values())
    by_altered = summary["pair_accuracy_by_altered"]
    assert by_altered and set(by_altered) <= {"colour", "shape", "count", "background"}
    # the fine-tuning started from the pretraining stand-in's weights, not from random ones
    pretrained = list((out / "pretrained").glob("tiny-*.safetensors"))
    assert len(pretrained) == 1
    config = json.loads((out / "run" / "config.json").read_text())
    assert config["weights"] == str(pretrained[0])
    assert config["channels_last"] is True  # the ResNet tower's convolutions, ~30 % faster on a CPU
    run = out / "run" / "split1"
    assert (run / "best.safetensors").is_file() and (run / "scatter.png").stat().st_size > 1000
    assert (run / "learning_curves.png").stat().st_size > 1000
    pairs = (out / "pairs.md").read_text()
    assert pairs.count("\n| ") >= 3 and f"{summary['pair_accuracy']:.0%}" in pairs
    # the README's two pictures, from the demo's model: a quality map and a best-of-5 contact sheet
    assert summary["quality_map"] == str(out / "quality_map.png") and summary["contact_sheet"] == str(out / "contact_sheet.png")
    assert (out / "quality_map.png").stat().st_size > 5000 and (out / "contact_sheet.png").stat().st_size > 5000
    ranked = (out / "pictures" / "ranked.csv").read_text().splitlines()
    assert len(ranked) == 1 + 15 and sum(line.endswith(",1") for line in ranked) == 3  # three prompts, one best each
    printed = capsys.readouterr().out
    # the metrics table (one split: its row only, no "mean ± std")
    assert "pair accuracy" in printed and "| split" in printed and "second generated set" in printed
    assert "what each defect costs" in printed and "what each defect costs" in pairs
    # --quick says it is a smoke test, at the start and again beside the final numbers
    assert printed.count(QUICK_NOTE) == 2 and printed.rstrip().splitlines()[0] == QUICK_NOTE
    assert printed.index(QUICK_NOTE, printed.index("second generated set")) > printed.index("second generated set")
    # a first run caches nothing, and says so
    assert "(cached)" not in printed and "data-quick (new)" in printed and "steps on rendered captioned pictures (new)" in printed
    # the caches, checked without a second demo: the generated set is the quick recipe's ...
    assert is_cached(out / "data-quick", SyntheticConfig(n=QUICK["n"], seed=0))
    assert not is_cached(out / "data-quick", SyntheticConfig(n=QUICK["n"] + 1, seed=0))
    # ... and the weights file holds the quick recipe's pretraining, named by its key
    assert re.fullmatch(rf"{QUICK['backbone']}-[0-9a-f]{{12}}\.safetensors", pretrained[0].name)
    meta = read_metadata(pretrained[0])
    assert meta["backbone"] == QUICK["backbone"] and meta["pretrain"]["steps"] == QUICK["pretrain_steps"]

    def no_training(*args, **kwargs):
        raise AssertionError("pretrained again")

    monkeypatch.setattr(pretrain, "pretrain", no_training)
    precision, device = config["precision"], config["device"]
    assert pretrained_tiny(out, QUICK, precision, device=device) == pretrained[0]  # the same recipe: no training
    assert capsys.readouterr().out.rstrip().endswith(f"{pretrained[0]} (cached)")
    # another recipe is never served these weights: other steps, another precision, a new pretraining version
    other_steps = {**QUICK, "pretrain_steps": QUICK["pretrain_steps"] + 1}
    for recipe, other_precision in [(other_steps, precision), (QUICK, "fp32" if precision != "fp32" else "bf16")]:
        with pytest.raises(AssertionError, match="pretrained again"):
            pretrained_tiny(out, recipe, other_precision, device=device)
    monkeypatch.setattr(demo, "PRETRAIN_VERSION", demo.PRETRAIN_VERSION + 1)
    with pytest.raises(AssertionError, match="pretrained again"):
        pretrained_tiny(out, QUICK, precision, device=device)
    assert list((out / "pretrained").iterdir()) == pretrained


def test_defect_effects_show_which_defects_the_scores_ignore():
    # MOS by the synthetic rule without rater noise; a "model" that sees everything but shape
    rng = np.random.default_rng(0)
    kinds = ["wrong_colour", "wrong_shape", "wrong_count", "blur", "noise"]
    defects, mos, scores = [], [], []
    for _ in range(300):
        mis = kinds[rng.integers(3)] if rng.random() < 0.4 else None
        quality = kinds[3 + rng.integers(2)] if rng.random() < 0.4 else None
        items = [f"{mis}:x"] * bool(mis) + [f"{quality}:0.50"] * bool(quality)
        defects.append(";".join(items) or "none")
        cost = 1.0 if quality else 0.0
        mos.append(4.5 - 1.75 * bool(mis) - cost)
        scores.append(4.0 - 1.5 * (mis in ("wrong_colour", "wrong_count")) - 0.5 * cost)
    effects = defect_effects(defects, mos, scores)
    assert effects["wrong_shape"]["mos"] == pytest.approx(-1.75) and effects["wrong_shape"]["score"] == pytest.approx(0, abs=1e-9)
    assert effects["wrong_colour"]["score"] == pytest.approx(-1.5) and effects["blur"]["score"] == pytest.approx(-0.5)
    assert effects["noise"]["mos"] == pytest.approx(-1.0)
    assert effects["jpeg"] == {"images": 0, "mos": None, "score": None}  # no image has it
    assert effects["wrong_count"]["images"] == sum("wrong_count" in d for d in defects)
    table = format_effects(effects, 300)
    assert "| wrong shape |" in table and "+0.00 |" in table and "jpeg" not in table


def test_demo_data_says_cached_only_when_it_was(tmp_path, capsys):
    folder = tmp_path / "data"
    first = demo_data(folder, 4, 0, workers=0, progress=False)
    printed = capsys.readouterr().out
    assert "(cached)" not in printed and printed.strip().endswith(f"{folder} (new)")
    mtime = first.stat().st_mtime_ns
    assert demo_data(folder, 4, 0, workers=0, progress=False) == first
    assert capsys.readouterr().out.strip().endswith(f"{folder} (cached)")
    assert first.stat().st_mtime_ns == mtime  # really served from the cache, not written again
    demo_data(folder, 5, 0, workers=0, progress=False)  # another size in the same folder: new again
    assert capsys.readouterr().out.strip().endswith(f"{folder} (new)")
