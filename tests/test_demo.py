"""`ipce demo --quick` end to end: data, training, evaluation, report, pair table."""
import json
import math

from ipce.cli import main


def test_demo_quick_runs_end_to_end(tmp_path, capsys):
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
    printed = capsys.readouterr().out
    assert "pair accuracy" in printed and "mean ± std" in printed and "second generated set" in printed
    # the generated data is cached: a second run reuses it
    data = out / "data-quick" / "annotations.csv"
    stamps = data.stat().st_mtime_ns, pretrained[0].stat().st_mtime_ns
    assert main(["demo", "--quick", "--out", str(out), "--workers", "0"]) == 0
    assert (data.stat().st_mtime_ns, pretrained[0].stat().st_mtime_ns) == stamps
