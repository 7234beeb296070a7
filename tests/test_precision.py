"""A checkpoint records the precision its metrics were computed in, and scoring uses it unless told
otherwise: `ipce predict` of a bf16 run gives the run's own held-out predictions."""
import csv
import logging

import pytest

import ipce
from ipce.cli import main
from tests.datagen import brightness_dataset, tiny_flags


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    annotations, images = brightness_dataset(root / "data", n=40)
    assert main(["train", *tiny_flags(annotations, images, root / "run", epochs=1), "--precision", "bf16"]) == 0
    return root / "run" / "split1", images


def predict_held_out(split, images, out, *extra):
    """`ipce predict` of the run's held-out rows, in its order and evaluation batch size; the scores."""
    assert main(["predict", "--checkpoint", str(split / "best.safetensors"), "--annotations",
                 str(split / "val_predictions.csv"), "--images", str(images), "--out", str(out),
                 "--batch-size", "8", "--workers", "0", "--no-progress", *extra]) == 0
    return [float(r["score"]) for r in read_csv(out)]


@pytest.mark.slow
def test_predict_without_a_precision_flag_reproduces_a_bf16_runs_held_out_predictions(bf16_run, tmp_path, caplog):
    split, images = bf16_run
    reported = [float(r["score"]) for r in read_csv(split / "val_predictions.csv")]
    assert ipce.load_scorer(split / "best.safetensors").precision == "bf16"

    with caplog.at_level(logging.WARNING, logger="ipce"):
        default = predict_held_out(split, images, tmp_path / "default.csv")
    assert default == pytest.approx(reported, abs=1.5e-6)  # the run's predictions, to their 6 written digits
    assert not [r for r in caplog.records if "precision" in r.getMessage()]  # nothing to say

    with caplog.at_level(logging.WARNING, logger="ipce"):
        fp32 = predict_held_out(split, images, tmp_path / "fp32.csv", "--precision", "fp32")
    assert max(abs(a - b) for a, b in zip(fp32, reported)) > 1e-4  # the flag is what made the difference
    said = [r.getMessage() for r in caplog.records if "precision" in r.getMessage()]
    assert len(said) == 1 and "scoring in fp32" in said[0] and "--precision bf16 reproduces" in said[0]


def test_a_checkpoint_without_a_recorded_precision_scores_in_fp32(tmp_path):
    from tests.conftest import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=0)
    assert ipce.load_scorer(ckpt).precision == "fp32"
    assert ipce.load_scorer(ckpt, precision="bf16").precision == "bf16"
