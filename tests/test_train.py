"""Training: it learns, follows the seed's schedule, resumes after SIGKILL, runs under torchrun."""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ipce
from ipce.cli import main
from ipce.engine.train import epoch_lrs, schedule_positions
from ipce.utils.metrics import srcc
from tests.datagen import brightness_dataset, tiny_flags

REPO = Path(__file__).resolve().parents[1]


def test_schedule_of_20_epochs_is_the_designs():
    assert schedule_positions(20, 5) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21]
    lrs = epoch_lrs(20, 5e-6, 5)
    expected = [5e-6 * (1 + math.cos(math.pi * t / 5)) / 2 for t in schedule_positions(20, 5)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert min(lrs) > 0 and lrs[0] == 5e-6 and lrs[5] == pytest.approx(5e-6 * (1 + math.cos(math.pi * 6 / 5)) / 2)


@pytest.mark.slow
def test_training_learns_and_writes_the_run(tmp_path):
    annotations, images = brightness_dataset(tmp_path / "data", n=60)
    out = tmp_path / "run"
    assert main(["train", *tiny_flags(annotations, images, out)]) == 0
    split = out / "split1"
    history = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    for key in ("epoch", "lr", "train_loss", "srcc", "plcc", "krcc", "rmse", "srcc_plcc_mean"):
        assert all(key in h for h in history), key
    summary = json.loads((out / "summary.json").read_text())
    best = summary["splits"][0]
    assert best["srcc_plcc_mean"] == max(h["srcc_plcc_mean"] for h in history)
    table = (out / "summary.md").read_text().splitlines()
    assert len([line for line in table if line.startswith("| 1 ")]) == 1
    assert not any("±" in line for line in table)  # one split: its values, no spread rows
    assert table[0] == "# annotations.csv (mos)"
    assert (split / "scatter.png").stat().st_size > 1000 and (split / "learning_curves.png").stat().st_size > 1000
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 2 and config["backbone"] == "tiny"

    # the best checkpoint is self-describing and beats the untrained model on the held-out part
    held_out = list(csv.DictReader((split / "val_predictions.csv").open()))
    names = [images / r["image"] for r in held_out]
    mos = [float(r["mos"]) for r in held_out]
    scorer = ipce.load_scorer(split / "best.safetensors")
    assert scorer.members[0].views.resize == 224 and scorer.members[0].meta["metrics"]["srcc"] == best["srcc"]
    trained = srcc(scorer.score(names, "a photo"), mos)
    import torch
    torch.manual_seed(20200626 + 1)  # the run's initialisation
    untrained = srcc(ipce.load_scorer("tiny", resize=224, patches=1).score(names, "a photo"), mos)
    assert trained == pytest.approx(best["srcc"], abs=1e-6)
    print("held-out srcc: untrained", untrained, "trained", trained)
    assert trained > 0.8 and trained > untrained + 0.3, (trained, untrained)


def test_holdout_protocol_reports_test_numbers(tmp_path):
    annotations, images = brightness_dataset(tmp_path / "data", n=40)
    out = tmp_path / "run"
    assert main(["train", *tiny_flags(annotations, images, out, epochs=1), "--protocol", "holdout"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == "holdout" and "val_srcc_plcc_mean" in summary["splits"][0]
    test_rows = list(csv.DictReader((out / "split1" / "test_predictions.csv").open()))
    val_rows = list(csv.DictReader((out / "split1" / "val_predictions.csv").open()))
    assert len(test_rows) == 8 and not {r["image"] for r in test_rows} & {r["image"] for r in val_rows}


@pytest.mark.parametrize("keep", [False, True], ids=["default", "keep-last"])
def test_finished_split_removes_last_pt_unless_keep_last(tmp_path, capsys, keep):
    annotations, images = brightness_dataset(tmp_path / "data", n=24)
    out = tmp_path / "run"
    flags = tiny_flags(annotations, images, out, epochs=1) + (["--keep-last"] if keep else [])
    assert main(["train", *flags]) == 0
    split = out / "split1"
    assert (split / "result.json").is_file() and (split / "best.safetensors").is_file()
    assert (split / "last.pt").is_file() is keep
    printed = capsys.readouterr().out
    assert (f"kept {split / 'last.pt'}" if keep else f"removed {split / 'last.pt'}") in printed
    assert json.loads((out / "config.json").read_text())["keep_last"] is keep
    # a finished split resumes from its result.json, with or without last.pt
    assert main(["train", "--resume", "--out", str(out)]) == 0
    assert "resuming after epoch" not in capsys.readouterr().out


def test_drop_last_state_keeps_or_removes(tmp_path):
    from ipce.engine.train import drop_last_state

    state = tmp_path / "last.pt"
    state.write_bytes(b"x")
    drop_last_state(state, keep=True)
    assert state.is_file()
    drop_last_state(state, keep=False)
    assert not state.exists()
    drop_last_state(state, keep=False)  # nothing there: no error


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ipce", "train", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    annotations, images = brightness_dataset(tmp_path / "data", n=32)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = run_cli(tiny_flags(annotations, images, whole, epochs=4))
    victim = run_cli(tiny_flags(annotations, images, killed, epochs=4))
    metrics = killed / "split1" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and victim.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed / "summary.json").exists()
    resumed = run_cli(["--resume", "--out", str(killed)])
    out, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, out
    assert "resuming after epoch" in out
    reference.communicate(timeout=240)
    assert reference.returncode == 0
    a = [json.loads(line) for line in (whole / "split1" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        for key in ("train_loss", "srcc", "plcc", "rmse"):
            assert x[key] == pytest.approx(y[key], abs=1e-6), (key, x, y)


@pytest.mark.slow
def test_torchrun_two_processes_with_gloo(tmp_path):
    annotations, images = brightness_dataset(tmp_path / "data", n=24)
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ipce", "train",
           *tiny_flags(annotations, images, out, epochs=1)]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["splits"]) == 1 and math.isfinite(summary["splits"][0]["srcc"])
    assert sorted(p.name for p in out.rglob("*.safetensors")) == ["best.safetensors"]
    # predictions of both ranks were gathered: the whole held-out fifth is there, once each
    rows = list(csv.DictReader((out / "split1" / "val_predictions.csv").open()))
    assert len(rows) == len({r["image"] for r in rows}) == 5


def test_missing_dataset_and_weights_are_listed_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IPCE_WEIGHTS", str(tmp_path / "w"))
    code = main(["train", "--preset", "agiqa3k", "--data-root", str(tmp_path / "nodata")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 2
    assert "AGIQA-3K" in err[0] and "github.com/lcysyzxdxc/AGIQA-3k-Database" in err[0]
    assert "ViT-B-32.pt" in err[1] and "ipce weights fetch ViT-B-32" in err[1]


def test_bad_images_stop_training_unless_skipped(tmp_path, capsys):
    annotations, images = brightness_dataset(tmp_path / "data", n=20)
    (images / "gen_003.png").write_bytes(b"")
    shutil.copy(annotations, tmp_path / "copy.csv")
    code = main(["train", *tiny_flags(annotations, images, tmp_path / "a", epochs=1)])
    err = capsys.readouterr().err
    assert code == 1 and "gen_003.png" in err and "--skip-bad" in err
    assert not (tmp_path / "a" / "split1").exists()
    code = main(["train", *tiny_flags(annotations, images, tmp_path / "b", epochs=1), "--skip-bad"])
    assert code == 0 and "dropped 1 bad records of 20" in capsys.readouterr().out


def test_bad_rows_and_bad_images_stop_training_together(tmp_path, capsys):
    annotations, images = brightness_dataset(tmp_path / "data", n=20)
    lines = annotations.read_text().splitlines()
    lines[3] = "gen_002.png,a photo,not-a-score"  # a bad row ...
    annotations.write_text("\n".join(lines) + "\n")
    (images / "gen_005.png").write_bytes(b"")  # ... and a bad image of a good row, in one message
    code = main(["train", *tiny_flags(annotations, images, tmp_path / "a", epochs=1)])
    err = capsys.readouterr().err
    assert code == 1 and "2 bad records" in err and "row 4" in err and "gen_005.png" in err
    code = main(["train", *tiny_flags(annotations, images, tmp_path / "b", epochs=1), "--skip-bad"])
    assert code == 0 and "dropped 2 bad records of 20" in capsys.readouterr().out


def test_original_split_folders_train_as_published_and_are_reported(tmp_path, capsys):
    annotations, images = brightness_dataset(tmp_path / "data", n=20)
    lines = annotations.read_text().splitlines()
    annotations.write_text("\n".join(lines + [lines[1].rsplit(",", 1)[0] + ",4.5"]) + "\n")  # gen_000 twice
    names = [line.split(",")[0] for line in lines[1:]]
    splits = tmp_path / "Database"
    for k in (0, 1):  # numbered from 0, header-less, one image on both sides, one unknown row
        (splits / str(k)).mkdir(parents=True)
        (splits / str(k) / "train.csv").write_text("".join(f"{n},a photo,1\n" for n in names[:16]) + "ghost.png,x,1\n")
        (splits / str(k) / "val.csv").write_text("".join(f"{n},a photo,1\n" for n in [names[15], *names[16:]]))
    flags = tiny_flags(annotations, images, tmp_path / "run", epochs=1)
    flags[flags.index("--splits") + 1] = "0"  # the folders' own numbers
    code = main(["train", *flags, "--splits-dir", str(splits)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "split 0: train 16, val 5, missing 1, overlap 1" in out and "warning:" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [r["split"] for r in summary["splits"]] == [0]
    assert summary["data"]["rows"] == 21 and len(summary["data"]["warnings"]) == 1
    counts = [{k: c[k] for k in ("split", "train", "val", "missing", "overlap")} for c in summary["data"]["split_files"]]
    assert counts == [{"split": k, "train": 16, "val": 5, "missing": 1, "overlap": 1} for k in (0, 1)]
    assert len((tmp_path / "run" / "split0" / "val_predictions.csv").read_text().splitlines()) == 1 + 5
    assert "## Data" in (tmp_path / "run" / "summary.md").read_text()
    code = main(["train", *flags, "--splits-dir", str(splits), "--drop-overlap", "--out", str(tmp_path / "clean")])
    assert code == 0 and "(1 dropped from val)" in capsys.readouterr().out
    assert len((tmp_path / "clean" / "split0" / "val_predictions.csv").read_text().splitlines()) == 1 + 4


def test_a_user_presets_file_adds_a_dataset_that_trains_with_its_recipe(tmp_path):
    annotations, images = brightness_dataset(tmp_path / "data", n=12)
    registry = tmp_path / "mine.toml"
    registry.write_text(f"""
[mine]
annotations = "data/{annotations.name}"
images = "data/{images.name}"
backbone = "tiny"
resize = 224
epochs = 1
batch_size = 4
lr = 1e-3
train_patches = 1
eval_patches = 2
flip = false
""")
    out = tmp_path / "run"
    assert main(["train", "--presets", str(registry), "--preset", "mine", "--workers", "0", "--splits", "1",
                 "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "mine" and config["dataset"] is None
    assert Path(config["annotations"]) == annotations.resolve() and Path(config["images"]) == images.resolve()
    assert (config["backbone"], config["resize"], config["epochs"], config["batch_size"], config["eval_patches"],
            config["flip"]) == ("tiny", 224, 1, 4, 2, False)
    rows = list(csv.DictReader((out / "split1" / "val_predictions.csv").open()))
    assert rows and all(Path(r["image"]).name in {p.name for p in images.iterdir()} for r in rows)
