"""Score scales: data scored on any range trains on the model's 0..5 and is answered on its own range."""
from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import pytest
import torch

import ipce
from ipce.api import Member, Scorer
from ipce.cli import main
from ipce.commands.train import add_train_arguments, config_from_args
from ipce.config import make_config, preset_names
from ipce.errors import IpceError
from ipce.models.backbone import infer_config
from ipce.models.checkpoint import read_metadata, save_checkpoint
from ipce.models.scale import ScoreScale
from ipce.utils.metrics import rmse
from tests.conftest import make_tiny_scorer
from tests.datagen import write_image

# ---------------------------------------------------------------------------- the value type


@pytest.mark.parametrize("lo, hi", [(0, 100), (1, 10), (-3.5, 2.0)])
def test_scale_maps_its_ends_onto_0_5_and_round_trips(lo, hi):
    scale = ScoreScale(lo, hi)
    assert scale.to_model(lo) == 0 and scale.to_model(hi) == pytest.approx(5)
    assert scale.to_data(0) == lo and scale.to_data(5) == pytest.approx(hi)
    values = [lo + (hi - lo) * f for f in (0.0, 0.13, 0.5, 0.99, 1.0)]
    assert [scale.to_data(scale.to_model(v)) for v in values] == pytest.approx(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    assert torch.allclose(scale.to_data(scale.to_model(tensor)), tensor)
    assert torch.allclose(scale.to_model(tensor), torch.tensor([scale.to_model(v) for v in values], dtype=torch.float64))


def test_the_model_scale_is_the_identity_to_the_bit():
    scale = ScoreScale(0, 5)
    assert scale.is_model_scale and ScoreScale() == scale
    tensor = torch.rand(7) * 5
    assert torch.equal(scale.to_model(tensor), tensor) and torch.equal(scale.to_data(tensor), tensor)
    assert scale.to_data(0.1) == 0.1 and scale.to_model(4.9) == 4.9


@pytest.mark.parametrize("lo, hi", [(5, 5), (10, 1), (0, math.inf), (math.nan, 1)])
def test_a_bad_range_is_a_one_line_error_naming_the_parameter_and_the_flag(lo, hi):
    with pytest.raises(IpceError, match="mos_range=") as err:
        ScoreScale(lo, hi)
    assert "\n" not in str(err.value) and err.value.with_flags().startswith("--mos-range ")
    with pytest.raises(IpceError, match="mos_range="):
        make_config(annotations="a.csv", images="imgs", mos_range=[lo, hi])


def test_presets_know_their_scale_and_custom_data_does_not_inherit_it():
    for name in preset_names():
        assert make_config(name).mos_range == (0.0, 5.0), name
    assert make_config("aigcqa30k", annotations="a.csv", images="imgs").mos_range is None
    assert make_config(annotations="a.csv", images="imgs", mos_range=[1, 10]).mos_range == (1.0, 10.0)


# ---------------------------------------------------------------------------- data


def scored_dataset(root: Path, scores: list[float], images: bool = True, column: str = "mos") -> tuple[Path, Path]:
    """`root/labels.csv` (image, prompt, <column>) and `root/imgs/`, with noise images unless `images` is False."""
    folder = root / "imgs"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, score in enumerate(scores):
        name = f"gen_{i:03d}.png"
        if images:
            write_image(folder / name, size=(64, 64), seed=i)
        rows.append([name, "a photo", score])
    annotations = root / "labels.csv"
    with annotations.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "prompt", column])
        writer.writerows(rows)
    return annotations, folder


def percent_scores(n: int) -> list[float]:
    return [round(1 + 99 * ((i * 37) % n) / (n - 1), 2) for i in range(n)]  # 1..100, shuffled


def train_flags(annotations: Path, images: Path, out: Path) -> list[str]:
    return ["train", "--annotations", str(annotations), "--images", str(images), "--backbone", "tiny",
            "--epochs", "1", "--lr", "1e-3", "--resize", "224", "--train-patches", "1", "--eval-patches", "1",
            "--batch-size", "8", "--workers", "0", "--splits", "1", "--no-flip", "--out", str(out)]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


# ---------------------------------------------------------------------------- refusals before any work


def test_scores_off_0_5_without_a_range_are_refused_before_any_image_is_opened(tmp_path, capsys):
    scores = percent_scores(12)
    annotations, images = scored_dataset(tmp_path, scores, images=False)  # opening any image would fail
    out = tmp_path / "run"
    assert main(train_flags(annotations, images, out)) == 1
    line = one_error_line(capsys)
    assert f"targets lie in {min(scores):g}..{max(scores):g}" in line
    assert f"column 'mos' of {annotations}" in line and "--mos-range LO HI" in line and "--mos-range 0 100" in line
    assert not out.exists()  # no run folder, so no model was built


def test_scores_outside_the_given_range_are_refused(tmp_path, capsys):
    scores = percent_scores(12)
    annotations, images = scored_dataset(tmp_path, scores, images=False)
    out = tmp_path / "run"
    assert main([*train_flags(annotations, images, out), "--mos-range", "0", "50"]) == 1
    line = one_error_line(capsys)
    assert f"targets lie in {min(scores):g}..{max(scores):g}" in line and "0..50" in line and "--mos-range" in line
    assert not out.exists()


def test_a_missing_score_column_names_target_col(tmp_path, capsys):
    annotations, images = scored_dataset(tmp_path, percent_scores(12), images=False, column="rating")
    assert main(train_flags(annotations, images, tmp_path / "run")) == 1
    line = one_error_line(capsys)
    assert "'mos'" in line and "--target-col" in line
    # naming the column gets past it (to the scale check: these scores are on 1..100)
    assert main([*train_flags(annotations, images, tmp_path / "run"), "--target-col", "rating"]) == 1
    assert "column 'rating'" in one_error_line(capsys)


def test_resume_keeps_the_range(tmp_path):
    config = make_config(annotations="a.csv", images="imgs", mos_range=[0, 100], out=str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    assert config_from_args(parser.parse_args(["--resume", "--out", str(tmp_path)])).mos_range == (0.0, 100.0)


# ---------------------------------------------------------------------------- a run on 0..100


@pytest.fixture(scope="module")
def percent_run(tmp_path_factory):
    """A tiny model trained one epoch with --mos-range 0 100: (run folder, annotations, images)."""
    root = tmp_path_factory.mktemp("percent")
    annotations, images = scored_dataset(root, percent_scores(20))
    out = root / "run"
    assert main([*train_flags(annotations, images, out), "--mos-range", "0", "100"]) == 0
    return out, annotations, images


def model_scale_scorer(scorer: Scorer) -> Scorer:
    """The same models with their scale forgotten: raw outputs on 0..5."""
    return Scorer([Member(m.model, {**m.meta, "mos_range": None}, m.views, m.prompt_prefix) for m in scorer.members],
                  combine=scorer.combine)


def held_out(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "split1" / "val_predictions.csv").open()))


def test_the_checkpoint_answers_on_0_100_as_20_times_its_model_scale(percent_run):
    out, _, images = percent_run
    checkpoint = out / "split1" / "best.safetensors"
    assert read_metadata(checkpoint)["mos_range"] == [0.0, 100.0]
    scorer = ipce.load_scorer(checkpoint)
    assert scorer.scale == (0.0, 100.0)
    paths = [images / r["image"] for r in held_out(out)]
    raw = model_scale_scorer(scorer).score(paths, "a photo")
    assert all(0 <= s <= 5 for s in raw)
    assert scorer.score(paths, "a photo") == pytest.approx([20 * s for s in raw], abs=1e-4)


def test_held_out_predictions_and_metrics_are_on_the_data_scale(percent_run):
    out, annotations, images = percent_run
    rows = held_out(out)
    given = {r["image"]: float(r["mos"]) for r in csv.DictReader(annotations.open())}
    assert all(float(r["mos"]) == given[r["image"]] for r in rows)  # the targets as written, not mapped
    raw = model_scale_scorer(ipce.load_scorer(out / "split1" / "best.safetensors")).score(
        [images / r["image"] for r in rows], "a photo")
    written = [float(r["score"]) for r in rows]
    assert written == pytest.approx([ScoreScale(0, 100).to_data(s) for s in raw], abs=1e-3)
    history = [json.loads(line) for line in (out / "split1" / "metrics.jsonl").read_text().splitlines()]
    expected_rmse = rmse([20 * s for s in raw], [float(r["mos"]) for r in rows])
    assert history[0]["rmse"] == pytest.approx(expected_rmse, rel=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"][0]["rmse"] == pytest.approx(expected_rmse, rel=1e-4)
    # the L1 loss was taken against targets mapped onto 0..5: on 0..100 it cannot exceed 100
    assert 0 < history[0]["train_loss"] < 100


def test_score_and_predict_answer_on_the_data_scale(percent_run, tmp_path, capsys):
    out, annotations, images = percent_run
    checkpoint = str(out / "split1" / "best.safetensors")
    paths = [str(images / "gen_000.png"), str(images / "gen_001.png")]
    expected = ipce.load_scorer(checkpoint).score(paths, "a photo")
    capsys.readouterr()
    assert main(["score", *paths, "--prompt", "a photo", "--checkpoint", checkpoint]) == 0
    printed = capsys.readouterr().out
    assert printed.count("(scale 0..100)") == 1 and all(f"{s:.4f}" in printed for s in expected)

    table = tmp_path / "scores.csv"
    assert main(["predict", "--annotations", str(annotations), "--images", str(images), "--checkpoint", checkpoint,
                 "--out", str(table), "--workers", "0", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(table.open()))
    scores = [float(r["score"]) for r in rows]
    assert scores[:2] == pytest.approx(expected, abs=1e-4)
    assert f"RMSE {rmse(scores, [float(r['mos']) for r in rows]):.4f}" in printed


def test_an_ensemble_combines_on_the_model_scale_and_refuses_mixed_scales(percent_run, tmp_path):
    out, _, images = percent_run
    checkpoint = out / "split1" / "best.safetensors"
    paths = [images / "gen_002.png", images / "gen_003.png"]
    raw = model_scale_scorer(ipce.load_scorer(checkpoint)).score(paths, "a photo")
    pair = ipce.load_scorer([checkpoint, checkpoint], combine="product")
    assert pair.scale == (0.0, 100.0)
    assert pair.score(paths, "a photo") == pytest.approx([20 * (s * s / 5) for s in raw], abs=1e-4)

    model = make_tiny_scorer(seed=1)
    plain = save_checkpoint(tmp_path / "plain.safetensors", model,
                            {"backbone": "tiny", "model_config": infer_config(model.clip.state_dict())})
    assert ipce.load_scorer(plain).scale == (0.0, 5.0)
    with pytest.raises(IpceError, match="different score scales") as err:
        ipce.load_scorer([checkpoint, plain])
    assert "0..100" in str(err.value) and "0..5" in str(err.value) and "\n" not in str(err.value)


def test_a_file_without_mos_range_answers_on_0_5(tmp_path):
    model = make_tiny_scorer(seed=2)
    path = tmp_path / "seed_epoch1.pt"
    torch.save({"model_state_dict": model.clip.state_dict()}, path)
    assert ipce.load_scorer(str(path)).scale == (0.0, 5.0)
