"""Prompt-free quality: `ipce train --template T --levels ...` stores its texts in the checkpoint, and a
template without {prompt} gives a model that scores, ranks and explains without a prompt."""
from __future__ import annotations

import csv

import pytest

import ipce
from ipce.cli import main
from ipce.config import make_config
from ipce.errors import IpceError
from ipce.models.checkpoint import read_metadata
from tests.datagen import brightness_dataset, tiny_flags

TEMPLATE = "a photo of {level} quality"
LEVELS = "bad,poor,fair,good,excellent"


@pytest.fixture(scope="module")
def prompt_free(tmp_path_factory):
    """(checkpoint, image folder) of a tiny model trained one epoch with a prompt-free template."""
    root = tmp_path_factory.mktemp("template")
    annotations, images = brightness_dataset(root / "data", n=16)
    code = main(["train", *tiny_flags(annotations, images, root / "run", epochs=1), "--template", TEMPLATE,
                 "--levels", LEVELS, "--no-progress"])
    assert code == 0
    return root / "run" / "split1" / "best.safetensors", images


def test_the_template_and_levels_are_stored_and_loaded(prompt_free):
    checkpoint, _ = prompt_free
    meta = read_metadata(checkpoint)
    assert meta["template"] == TEMPLATE and meta["levels"] == LEVELS.split(",")
    model = ipce.load_scorer(checkpoint).members[0].model
    assert model.template == TEMPLATE and model.levels == tuple(LEVELS.split(","))
    assert model.tokenize(["ignored"]).shape[0] == 5 and not model.needs_prompt


def test_score_without_a_prompt(prompt_free, tmp_path, capsys):
    checkpoint, images = prompt_free
    paths = sorted(images.iterdir())[:2]
    out = tmp_path / "scores.csv"
    assert main(["score", *map(str, paths), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert "prompt: none" in capsys.readouterr().out
    scores = [float(r["score"]) for r in csv.DictReader(out.open())]
    scorer = ipce.load_scorer(checkpoint)
    assert scores == pytest.approx(scorer.score(paths), abs=1e-6)
    assert scorer.score(paths, "any words at all") == pytest.approx(scorer.score(paths), abs=1e-6)  # texts lack {prompt}


def test_rank_and_explain_without_a_prompt(prompt_free, tmp_path):
    checkpoint, images = prompt_free
    out = tmp_path / "ranked.csv"
    assert main(["rank", "--checkpoint", str(checkpoint), "--images", str(images), "--top", "3", "--out", str(out),
                 "--no-progress"]) == 0
    rows = list(csv.DictReader(out.open()))
    scorer = ipce.load_scorer(checkpoint)
    best = sorted(images.iterdir(), key=lambda p: -scorer.score(p)[0])[:3]
    assert [r["image"] for r in rows] == [p.name for p in best] and {r["prompt"] for r in rows} == {""}
    first = sorted(images.iterdir())[0]
    assert main(["explain", str(first), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "maps"),
                 "--no-progress"]) == 0
    assert (tmp_path / "maps" / f"{first.stem}.png").is_file()


def test_a_prompt_aware_checkpoint_without_a_prompt_is_one_line(tmp_path, capsys):
    from tests.conftest import random_image, tiny_checkpoint

    random_image(240, 240).save(tmp_path / "a.png")
    checkpoint = tiny_checkpoint(tmp_path / "m.safetensors", seed=1)
    code = main(["score", str(tmp_path / "a.png"), "--checkpoint", str(checkpoint)])
    err = capsys.readouterr().err
    assert code == 1 and "needs a prompt" in err and "--prompt" in err and err.count("\n") == 1


@pytest.mark.parametrize("template, levels, message", [
    ("a photo of quality", None, "{level}"),
    ("a {level} photo of {subject}", None, "{level}"),
    ("a photo of {level", None, "--template"),
    (None, ("bad",), "at least two"),
    (None, ("bad", "bad", "good"), "distinct"),
])
def test_bad_templates_and_levels_are_one_line_errors(template, levels, message):
    with pytest.raises(IpceError, match=message if message != "{level}" else r"\{level\}"):
        make_config(None, annotations="a.csv", images="imgs", template=template, levels=levels)
