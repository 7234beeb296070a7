"""The CLIPScore baseline (`clipscore:NAME`): 100 * max(cos, 0) of CLIP's own image input and the prompt,
checked against open_clip's preprocessing and encoders on the same weights."""
from __future__ import annotations

import csv
import re

import numpy as np
import open_clip
import pytest
import torch

import ipce
from ipce.cli import main
from tests.conftest import random_image
from tests.datagen import build_custom


def _expected(clip, images, prompts) -> list[float]:
    preprocess = open_clip.image_transform(224, is_train=False)  # shorter side 224 (bicubic), centre crop
    tokens = open_clip.get_tokenizer("ViT-B-32")(prompts)
    with torch.no_grad():
        image = clip.encode_image(torch.stack([preprocess(im) for im in images]))
        text = clip.encode_text(tokens)
    cosine = torch.nn.functional.cosine_similarity(image, text, dim=-1)
    return [max(100 * c, 0.0) for c in cosine.tolist()]


def test_clipscore_is_100_times_the_clipped_cosine():
    torch.manual_seed(0)
    scorer = ipce.load_scorer("clipscore:tiny")
    clip = scorer.members[0].model.clip
    images = [random_image(300 + 20 * i, 240, seed=i) for i in range(5)]
    prompts = [f"a picture number {i} of a red cat" for i in range(5)]
    assert scorer.scale == (0.0, 100.0)
    expected = _expected(clip, images, prompts)
    assert scorer.score(images, prompts) == pytest.approx(expected, abs=1e-3)
    assert max(expected) > 0
    with torch.no_grad():
        clip.text_projection.neg_()  # every cosine changes sign: the positive ones are now clipped to 0
    scorer.members[0].model.text_cache.clear()
    flipped = _expected(clip, images, prompts)
    assert scorer.score(images, prompts) == pytest.approx(flipped, abs=1e-3)
    assert [e == 0 for e in flipped] == [e > 0 for e in expected]


def test_clipscore_reward_follows_the_score():
    torch.manual_seed(0)
    scorer = ipce.load_scorer("clipscore:tiny")
    images = [random_image(320, 256, seed=i) for i in range(3)]
    pixels = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255 for im in images])
    pixels.requires_grad_(True)
    reward = scorer.reward(pixels, "a red cat")
    reward.sum().backward()
    assert pixels.grad.abs().sum() > 0
    assert reward.tolist() == pytest.approx(scorer.score(images, "a red cat"), abs=0.1)  # bicubic in 8 bits or not


def test_clipscore_in_predict_and_explain(tmp_path, capsys):
    annotations, images = build_custom(tmp_path, n=6)
    out = tmp_path / "scores.csv"
    assert main(["predict", "--annotations", str(annotations), "--images", str(images), "--checkpoint",
                 "clipscore:tiny", "--workers", "0", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "scores on 0..100" in printed and re.search(r"SRCC -?[\d.]+", printed)
    with out.open(newline="") as fh:
        scores = [float(r["score"]) for r in csv.DictReader(fh)]
    assert len(scores) == 6 and all(0 <= s <= 100 for s in scores)
    assert main(["explain", str(next(images.iterdir())), "--prompt", "x", "--checkpoint", "clipscore:tiny",
                 "--out", str(tmp_path / "maps")]) == 1
    assert "quality map needs ipce's crops" in capsys.readouterr().err
