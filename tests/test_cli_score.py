import csv

import pytest

import ipce
from ipce.errors import IpceError
from ipce.cli import main
from tests.conftest import random_image


def test_score_prints_a_table_and_writes_csv(tmp_path, capsys):
    paths = []
    for i, size in enumerate([(300, 200), (600, 600)]):
        paths.append(tmp_path / f"gen_{i}.png")
        random_image(*size, seed=i).save(paths[-1])
    out = tmp_path / "scores.csv"
    code = main(["score", *map(str, paths), "--prompt", "a red circle", "--checkpoint", "tiny",
                 "--patches", "4", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert [r["image"] for r in rows] == [str(p) for p in paths]
    assert all(r["prompt"] == "a red circle" for r in rows)
    scores = [float(r["score"]) for r in rows]
    assert all(0 <= s <= 5 for s in scores)
    assert f"{scores[0]:.4f}" in printed and str(paths[1]) in printed
    # the same numbers through the Python API
    import torch
    torch.manual_seed(0)
    api = ipce.load_scorer("tiny", patches=4)
    assert len(api.score(paths, "a red circle")) == 2


def test_missing_image_is_one_line_error(tmp_path, capsys):
    code = main(["score", str(tmp_path / "nope.png"), "--prompt", "x", "--checkpoint", "tiny"])
    err = capsys.readouterr().err
    assert code == 1 and "nope.png" in err and err.count("\n") == 1


def test_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    image = tmp_path / "a.png"
    random_image(64, 64).save(image)
    code = main(["score", str(image), "--prompt", "x", "--checkpoint", str(tmp_path / "model.safetensors")])
    err = capsys.readouterr().err
    assert code == 1 and "model.safetensors: no such checkpoint" in err and err.count("\n") == 1


def test_prompt_count_must_match():
    scorer = ipce.load_scorer("tiny", patches=2)
    with pytest.raises(IpceError, match="2 images but 3 prompts"):
        scorer.score([random_image(64, 64), random_image(64, 64)], ["a", "b", "c"])


@pytest.mark.parametrize("flags, message", [
    (["--resize", "100"], "--resize 100: must be at least 224 (the crop size)"),
    (["--patches", "-1"], "--patches -1: must be at least 1"),
])
def test_bad_view_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    image = tmp_path / "a.png"
    random_image(64, 64).save(image)
    code = main(["score", str(image), "--prompt", "x", "--checkpoint", "tiny", *flags])
    err = capsys.readouterr().err
    assert code == 1 and err == f"ipce: error: {message}\n"


@pytest.mark.parametrize("flags, message", [
    (["--resize", "100"], "--resize 100: must be at least 224 (the crop size)"),
    (["--train-patches", "0"], "--train-patches 0: must be at least 1"),
    (["--eval-patches", "0"], "--eval-patches 0: must be at least 1"),
])
def test_train_refuses_bad_view_flags_before_any_work(tmp_path, capsys, flags, message):
    # No data folder: the flag must be refused before the data (or weights) are looked for.
    code = main(["train", "--preset", "agiqa3k", "--data-root", str(tmp_path / "nodata"),
                 "--out", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err
    assert code == 1 and err == f"ipce: error: {message}\n"
    assert not (tmp_path / "run").exists()
