import csv

import pytest

import ipce
from ipce.errors import IpceError
from ipce.cli import main
from tests.conftest import random_image, tiny_checkpoint


def test_score_prints_a_table_and_writes_csv(tmp_path, capsys):
    paths = []
    for i, size in enumerate([(300, 200), (600, 600)]):
        paths.append(tmp_path / f"gen_{i}.png")
        random_image(*size, seed=i).save(paths[-1])
    out = tmp_path / "scores.csv"
    checkpoint = tiny_checkpoint(tmp_path / "m.safetensors", seed=3)  # fixed weights, whatever the RNG's state
    code = main(["score", *map(str, paths), "--prompt", "a red circle", "--checkpoint", str(checkpoint),
                 "--patches", "4", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert [r["image"] for r in rows] == [str(p) for p in paths]
    assert all(r["prompt"] == "a red circle" for r in rows)
    scores = [float(r["score"]) for r in rows]
    assert all(0 <= s <= 5 for s in scores)
    assert f"{scores[0]:.4f}" in printed and str(paths[1]) in printed
    # the same numbers through the Python API (the CSV holds 6 decimals)
    api = ipce.load_scorer(str(checkpoint), patches=4).score(paths, "a red circle")
    assert scores == pytest.approx(api, abs=1e-6)
    assert api[0] != pytest.approx(api[1], abs=1e-4)  # two images, two scores: a mix-up would show


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


def test_score_warns_once_about_odd_prompts_and_sends_folders_to_predict(tmp_path, capsys):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"gen_{i}.png")
        random_image(240, 240, seed=i).save(paths[-1])
    code = main(["score", *map(str, paths), "--prompt", "一只猫坐在沙发上", "--checkpoint", "tiny", "--patches", "1"])
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("ipce: warning:") == 1 and "non-Latin" in err  # once per run, not once per image
    code = main(["score", str(tmp_path), "--prompt", "a cat", "--checkpoint", "tiny"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "is a folder" in err[0] and "ipce predict --images" in err[0]


SCORER_COMMANDS = ["score", "predict", "rank", "explain", "serve"]


@pytest.mark.parametrize("name", SCORER_COMMANDS)
def test_every_command_that_builds_a_scorer_takes_the_model_flags(name):
    from tests.test_cli_grammar import PARSERS, _options

    options = _options(PARSERS[name])
    for flag in ("--checkpoint", "--weights", "--resize", "--patches", "--combine", "--prompt-prefix", "--device",
                 "--precision", "--compile", "--channels-last"):
        assert flag in options, (name, flag)
    assert isinstance(options["--checkpoint"], __import__("argparse")._AppendAction)  # repeat to ensemble


def test_score_ensembles_two_checkpoints_with_resize(tmp_path, capsys):
    image = tmp_path / "gen_0.png"
    random_image(256, 192, seed=1).save(image)
    first = tiny_checkpoint(tmp_path / "a.safetensors", seed=3)
    second = tiny_checkpoint(tmp_path / "b.safetensors", seed=4)
    out = tmp_path / "scores.csv"
    code = main(["score", str(image), "--prompt", "a cat", "--checkpoint", str(first), "--checkpoint", str(second),
                 "--combine", "product", "--resize", "224", "--patches", "1", "--no-progress", "--out", str(out)])
    assert code == 0
    got = float(next(csv.DictReader(out.open()))["score"])
    single = [ipce.load_scorer(c, resize=224, patches=1).score([image], "a cat")[0] for c in (first, second)]
    assert got == pytest.approx(single[0] * single[1] / 5, abs=1e-6)
    assert got != pytest.approx(ipce.load_scorer(first, patches=1).score([image], "a cat")[0], abs=1e-4)
