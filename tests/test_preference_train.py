"""Training on human choices: batches of whole groups, the Bradley-Terry loss, splits by prompt, a
preference run and a mixed MOS + preference run end to end."""
from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ipce.cli import main
from ipce.datasets.preferences import PreferenceGroup
from ipce.engine.preferences import PreferenceData, bradley_terry_loss, group_batches, split_groups
from ipce.models.checkpoint import read_metadata
from tests.datagen import tiny_flags


def _group(prompt: str, names, ranks) -> PreferenceGroup:
    return PreferenceGroup(prompt=prompt, images=tuple(Path("/x") / n for n in names), names=tuple(names),
                           ranks=tuple(float(r) for r in ranks))


def test_batches_hold_whole_groups_within_the_batch_size():
    rng = np.random.default_rng(0)
    groups = [_group(f"p{g}", [f"{g}_{i}.png" for i in range(n)], rng.integers(1, 4, n))
              for g, n in enumerate(rng.integers(2, 7, 30))]
    data = PreferenceData.of(groups)
    batches = group_batches(data, batch_size=8, seed=1)
    seen = []
    for batch in batches:
        assert len(batch.images) <= 8 or len(batch.images) == max(len(m) for m in data.members)
        names = [data.records[i].name for i in batch.images]
        prefixes = {n.split("_")[0] for n in names}
        for prefix in prefixes:  # every group in a batch is there whole
            group = next(g for g in groups if g.prompt == f"p{prefix}")
            assert set(group.names) <= set(names)
        seen += sorted(prefixes)
        assert len(batch.pairs) == sum(math.comb(len(next(g for g in groups if g.prompt == f"p{p}").names), 2)
                                       for p in prefixes)
    assert sorted(seen) == sorted(str(g) for g in range(30))  # each group once
    assert [b.images for b in group_batches(data, 8, seed=1)] == [b.images for b in batches]  # seeded
    assert [b.images for b in group_batches(data, 8, seed=2)] != [b.images for b in batches]


def test_bradley_terry_loss_is_the_pairwise_log_likelihood():
    scores = torch.tensor([3.0, 1.0, 2.5, 2.5], requires_grad=True)
    pairs = [(0, 1, 1.0), (1, 2, 0.0), (2, 3, 0.5), (0, 3, 0.0)]
    loss = bradley_terry_loss(scores, pairs)
    by_hand = []
    for i, j, y in pairs:
        d = float((scores[i] - scores[j]).detach())
        by_hand.append(-(y * math.log(1 / (1 + math.exp(-d))) + (1 - y) * math.log(1 / (1 + math.exp(d)))))
    assert loss.item() == pytest.approx(sum(by_hand) / len(by_hand))
    loss.backward()
    grad = [0.0] * 4
    for i, j, y in pairs:  # d/ds_i of the mean: (sigmoid(s_i - s_j) - y) / pairs, the opposite for s_j
        g = (1 / (1 + math.exp(-float((scores[i] - scores[j]).detach()))) - y) / len(pairs)
        grad[i] += g
        grad[j] -= g
    assert scores.grad.tolist() == pytest.approx(grad)
    tie = torch.tensor([1.0, 1.0], requires_grad=True)
    bradley_terry_loss(tie, [(0, 1, 0.5)]).backward()
    assert tie.grad.abs().max() == 0  # a tie is learned as 1/2: equal scores are its minimum


def test_splits_keep_every_prompt_on_one_side():
    groups = [_group(f"prompt {g % 7}", [f"{g}_a.png", f"{g}_b.png"], [1, 2]) for g in range(40)]
    config = SimpleNamespace(protocol="paper", n_splits=3, ratio=0.8, seed=5, holdout_ratios=(0.7, 0.1, 0.2))
    for split in split_groups(groups, config).values():
        train = {groups[i].prompt for i in split.train}
        val = {groups[i].prompt for i in split.val}
        assert train and val and not train & val


# ----------------------------------------------------------------------------- runs

def _preference_data(root: Path, prompts: int = 12, per_prompt: int = 4, seed: int = 0):
    """Images whose brightness people prefer (a signal a tiny CLIP learns in a few epochs): an
    ImageRewardDB-form JSON, and a MOS CSV of the same images (brightness on 0..5)."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    entries, rows = [], []
    for p in range(prompts):
        levels = rng.uniform(0.05, 0.95, per_prompt)
        names = []
        for i, level in enumerate(levels):
            name = f"p{p}_{i}.png"
            pixels = np.clip(rng.normal(level * 255, 20, size=(224, 224, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(images / name)
            names.append(name)
            rows.append([name, f"prompt {p}", round(5 * level, 3)])
        ranks = [int(r) for r in np.argsort(np.argsort(-levels)) + 1]
        entries.append({"id": f"g{p}", "prompt": f"prompt {p}", "generations": names, "ranking": ranks})
    prefs = root / "prefs.json"
    prefs.write_text(json.dumps(entries))
    mos = root / "mos.csv"
    with mos.open("w", newline="") as fh:
        csv.writer(fh).writerows([["image", "prompt", "mos"], *rows])
    return prefs, mos, images


def _accuracy_from_predict(groups_file: Path, scores_csv: Path) -> tuple[float, int]:
    """Pairwise accuracy over untied pairs from predict's CSV, pair by pair."""
    with scores_csv.open(newline="") as fh:
        score = {row["image"]: float(row["score"]) for row in csv.DictReader(fh)}
    credit = []
    for entry in json.loads(groups_file.read_text()):
        for (a, ra), (b, rb) in itertools.combinations(zip(entry["generations"], entry["ranking"]), 2):
            if ra != rb:
                preferred, other = (a, b) if ra < rb else (b, a)
                credit.append(1.0 if score[preferred] > score[other] else 0.5 if score[preferred] == score[other]
                              else 0.0)
    return sum(credit) / len(credit), len(credit)


@pytest.mark.slow
def test_preference_run_reports_the_accuracy_predict_gives(tmp_path, capsys):
    prefs, _, images = _preference_data(tmp_path)
    out = tmp_path / "run"
    flags = tiny_flags(None, images, out, epochs=3)
    flags[flags.index("--annotations"):flags.index("--annotations") + 2] = ["--preferences", str(prefs)]
    assert main(["train", *flags]) == 0
    split = out / "split1"
    result = json.loads((split / "result.json").read_text())
    history = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert all("pair_accuracy" in h and "train_pref_loss" in h and "srcc" not in h for h in history)
    assert result["choice"] == max(h["choice"] for h in history)  # the epoch kept is the best by accuracy
    meta = read_metadata(split / "best.safetensors")
    assert meta["trained_on"]["preferences"]["ties"] == "learned as 1/2" and meta["trained_on"]["mos"] is None
    capsys.readouterr()
    held_out = split / "val_preferences.json"
    assert main(["predict", "--preferences", str(held_out), "--images", str(images), "--checkpoint",
                 str(split / "best.safetensors"), "--workers", "0", "--out", str(tmp_path / "val.csv"),
                 "--no-progress"]) == 0
    accuracy, pairs = _accuracy_from_predict(held_out, tmp_path / "val.csv")
    assert pairs == result["pairs"] > 0
    assert accuracy == pytest.approx(result["pair_accuracy"], abs=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["summary"]["pair_accuracy"]["mean"] == pytest.approx(result["pair_accuracy"])
    assert main(["score", str(images / "p0_0.png"), "--prompt", "prompt 0", "--checkpoint",
                 str(split / "best.safetensors")]) == 0
    assert "it is not a MOS" in capsys.readouterr().out


@pytest.mark.slow
def test_mixed_run_trains_on_both_and_reports_both(tmp_path):
    prefs, mos, images = _preference_data(tmp_path, prompts=8)
    out = tmp_path / "run"
    assert main(["train", *tiny_flags(mos, images, out, epochs=2), "--preferences", str(prefs),
                 "--preference-weight", "0.5"]) == 0
    history = [json.loads(line) for line in (out / "split1" / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_loss", "train_pref_loss", "srcc", "plcc", "pair_accuracy", "kendall_tau"):
        assert all(math.isfinite(h[key]) for h in history), key
    assert all(h["choice"] == pytest.approx((h["srcc_plcc_mean"] + 2 * h["pair_accuracy"] - 1) / 2) for h in history)
    summary = json.loads((out / "summary.json").read_text())
    assert {"srcc", "pair_accuracy"} <= set(summary["summary"])
    meta = read_metadata(out / "split1" / "best.safetensors")
    assert meta["trained_on"]["mos"] and meta["trained_on"]["preferences"]["weight"] == 0.5
    assert (out / "split1" / "learning_curves.png").is_file()


def test_demo_pairs_are_the_pairs_of_one_prompt_with_a_noisy_rater(tmp_path):
    from ipce.datasets.preferences import load_preferences
    from ipce.demo.preferences import draw_pairs

    rng = np.random.default_rng(4)
    rows = [[f"img_{i}.png", f"prompt {i % 9}", f"{rng.uniform(0, 5):.3f}"] for i in range(60)]
    annotations = tmp_path / "annotations.csv"
    with annotations.open("w", newline="") as fh:
        csv.writer(fh).writerows([["image", "prompt", "mos"], *rows])
    table = draw_pairs(annotations, tmp_path / "pairs.csv", seed=0)
    found = load_preferences(table.path, tmp_path)
    per_prompt = [sum(r[1] == f"prompt {p}" for r in rows) for p in range(9)]
    assert table.pairs == len(found.groups) == sum(math.comb(k, 2) for k in per_prompt)
    mos = {r[0]: float(r[2]) for r in rows}
    follows = []
    for g in found.groups:
        assert g.prompt == next(r[1] for r in rows if r[0] == g.names[0] and r[1] == g.prompt)
        if g.ranks[0] != g.ranks[1]:
            follows.append((g.ranks[0] < g.ranks[1]) == (mos[g.names[0]] > mos[g.names[1]]))
    assert table.agree == pytest.approx(np.mean(follows))
    assert 0.6 < table.agree < 1.0  # noisy, but far above chance on MOS spread over 0..5
    assert table.ties == sum(g.ranks[0] == g.ranks[1] for g in found.groups)
