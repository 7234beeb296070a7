"""Preference data: the readers, `ipce check-data --preferences`, the preference metrics, and
`ipce predict --preferences`."""
from __future__ import annotations

import csv
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from ipce.cli import main
from ipce.datasets.preferences import PairColumns, count_preferences, load_preferences
from ipce.utils.metrics import preference_metrics
from tests.conftest import tiny_checkpoint
from tests.datagen import DATA, write_image

EXCERPT = DATA / "preferences" / "imagerewarddb-test-excerpt.json"  # 8 prompts of ImageRewardDB's test.json


def _holds(out: str) -> dict[str, int]:
    line = next(line for line in out.splitlines() if line.startswith("holds:"))
    return {name: int(n) for n, name in re.findall(r"(\d+) (prompts|groups|images|ordered pairs|tied pairs)", line)}


def _write_generations(entries, folder: Path) -> None:
    for k, name in enumerate(n for e in entries for n in e["generations"]):
        write_image(folder / name, size=(40, 32), seed=k)


def test_imagerewarddb_counts_equal_an_independent_count(tmp_path, capsys):
    entries = json.loads(EXCERPT.read_text(encoding="utf-8"))
    _write_generations(entries, tmp_path / "images")
    assert main(["check-data", "--preferences", str(EXCERPT), "--images", str(tmp_path / "images"),
                 "--workers", "0", "--no-progress"]) == 0
    printed = _holds(capsys.readouterr().out)
    pairs = [(a, b) for e in entries for a, b in itertools.combinations(e["ranking"], 2)]
    assert any(len(set(e["ranking"])) < len(e["ranking"]) for e in entries)  # the excerpt has ties
    assert printed == {"prompts": len({e["prompt"] for e in entries}), "groups": len(entries),
                       "images": len({n for e in entries for n in e["generations"]}),
                       "ordered pairs": sum(a != b for a, b in pairs), "tied pairs": sum(a == b for a, b in pairs)}


def test_imagerewarddb_groups_keep_ranks_and_ties(tmp_path):
    entries = json.loads(EXCERPT.read_text(encoding="utf-8"))
    found = load_preferences(EXCERPT, tmp_path)
    assert not found.problems and found.rows == len(entries)
    for entry, group in zip(entries, found.groups):
        assert group.prompt == entry["prompt"] and group.key == entry["id"]
        assert list(group.names) == entry["generations"]
        assert group.images[0] == (tmp_path / entry["generations"][0]).resolve()
        for i, j, outcome in group.pairs():
            a, b = entry["ranking"][i], entry["ranking"][j]
            assert outcome == (0.5 if a == b else 1.0 if a < b else 0.0)


def _pair_csv(path: Path, rows, header=("caption", "jpg_0", "jpg_1", "label_0")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_pair_table_in_pick_a_pic_naming_and_other_columns(tmp_path):
    rows = [["a red cube", "a.png", "b.png", "1"], ["a red cube", "a.png", "c.png", "0"],
            ["a blue ball", "d.png", "e.png", "0.5"]]
    found = load_preferences(_pair_csv(tmp_path / "pairs.csv", rows), tmp_path)
    assert [g.ranks for g in found.groups] == [(1, 2), (2, 1), (1, 1)]
    assert [g.row for g in found.groups] == [2, 3, 4]
    counts = count_preferences(found.groups)
    assert (counts.prompts, counts.images, counts.pairs, counts.tied_pairs) == (2, 5, 2, 1)
    renamed = _pair_csv(tmp_path / "renamed.csv", rows, header=("text", "left", "right", "choice"))
    again = load_preferences(renamed, tmp_path, columns=PairColumns("text", "left", "right", "choice"))
    assert [(g.prompt, g.names, g.ranks) for g in again.groups] == [(g.prompt, g.names, g.ranks) for g in found.groups]
    with pytest.raises(Exception, match="choice"):
        load_preferences(renamed, tmp_path)  # the default names are not there: the missing column is named


def test_bad_pair_table_every_problem_in_one_pass(tmp_path, capsys):
    images = tmp_path / "images"
    for name in ("a.png", "b.png", "c.png"):
        write_image(images / name, seed=len(name))
    (images / "broken.png").write_bytes(b"not an image")
    rows = [["ok", "a.png", "b.png", "1"],             # 2: fine
            ["same", "a.png", "a.png", "1"],           # 3: an image with itself
            ["range", "a.png", "b.png", "2"],          # 4: label out of range
            ["", "a.png", "c.png", "0"],               # 5: empty prompt
            ["one", "a.png", "", "1"],                 # 6: an empty image name
            ["gone", "a.png", "missing.png", "1"],     # 7: a missing image
            ["bad", "broken.png", "c.png", "0"],       # 8: a broken image
            ["ok", "b.png", "a.png", "1"]]             # 9: row 2's pair, the other choice (a warning)
    table = _pair_csv(tmp_path / "pairs.csv", rows)
    report = tmp_path / "report.csv"
    assert main(["check-data", "--preferences", str(table), "--images", str(images), "--no-progress",
                 "--report", str(report)]) == 1
    out = capsys.readouterr().out
    with report.open(newline="", encoding="utf-8") as fh:
        found = list(csv.DictReader(fh))
    errors = {(r["row"], r["problem"].split(":")[0]) for r in found if r["severity"] == "error"}
    assert errors == {("3", "self-pair"), ("4", "bad-label"), ("5", "empty-prompt"), ("6", "empty-name"),
                      ("7", "missing"), ("8", "not-an-image")}
    assert [(r["row"], r["problem"].split(":")[0]) for r in found if r["severity"] == "warning"] == \
        [("2", "contradiction")]
    by_row = {r["row"]: r["problem"] for r in found if r["severity"] == "error"}
    assert str(table) in by_row["7"] and "missing.png" in by_row["7"] and "broken.png" in by_row["8"]
    assert "entries: 8 in the file, 4 usable (4 left out)" in out
    assert "left out for unreadable images: 2 images, 2 ordered pairs, 0 tied pairs, 2 groups" in out
    assert "usable: 1 prompts, 2 groups, 2 images, 2 ordered pairs, 0 tied pairs" in out


def test_bad_imagerewarddb_entries(tmp_path):
    entries = [{"id": "x1", "prompt": "p", "generations": ["a.png", "b.png"], "ranking": [1]},
               {"id": "x2", "prompt": "p", "generations": ["a.png", "b.png"], "ranking": [1, 0]},
               {"id": "x3", "prompt": "p", "generations": ["a.png"], "ranking": [1]},
               {"id": "x4", "generations": ["a.png", "b.png"], "ranking": [1, 2]},
               {"id": "x5", "prompt": "p", "generations": ["a.png", "b.png"], "ranking": [2, 1]}]
    path = tmp_path / "prefs.json"
    path.write_text(json.dumps(entries))
    found = load_preferences(path, tmp_path)
    assert [(p.row, p.kind) for p in found.problems] == [(1, "bad-label"), (2, "bad-label"), (3, "single-image"),
                                                         (4, "missing-field")]
    assert all(f"id x{p.row}" in p.message and str(path) in p.message for p in found.problems)
    assert [g.key for g in found.groups] == ["x5"]


# ----------------------------------------------------------------------------- metrics

def _brute_force(scores, ranks):
    """The metrics by their definition, pair by pair (scipy only for tau-b)."""
    from scipy.stats import kendalltau

    strict, half, taus = [], [], []
    for s, r in zip(scores, ranks):
        for i, j in itertools.combinations(range(len(s)), 2):
            human = 0.5 if r[i] == r[j] else float(r[i] < r[j])
            model = 0.5 if s[i] == s[j] else float(s[i] > s[j])
            half.append(1 - abs(human - model))
            if human != 0.5:
                strict.append(1 - abs(human - model))
        if len(set(r)) > 1:
            taus.append(0.0 if len(set(s)) == 1 else kendalltau(s, [-x for x in r]).statistic)
    return sum(strict) / len(strict), sum(half) / len(half), sum(taus) / len(taus), len(strict), len(half) - len(strict)


def test_preference_metrics_follow_their_definitions():
    rng = np.random.default_rng(3)
    scores, ranks = [], []
    for size in rng.integers(2, 9, size=40):
        ranks.append(rng.integers(1, 5, size=size).tolist())
        scores.append(np.round(rng.normal(size=size), 1).tolist())  # rounded: some equal scores
    scores.append([1.0, 1.0, 1.0])  # constant scores: tau 0
    ranks.append([1, 2, 3])
    m = preference_metrics(scores, ranks)
    accuracy, with_ties, tau, pairs, tied = _brute_force(scores, ranks)
    assert m["pair_accuracy"] == pytest.approx(accuracy) and m["pair_accuracy_ties"] == pytest.approx(with_ties)
    assert m["kendall_tau"] == pytest.approx(tau)
    assert (m["pairs"], m["tied_pairs"]) == (pairs, tied) and tied > 0
    perfect = preference_metrics([[-x for x in r] for r in ranks], ranks)
    assert perfect["pair_accuracy"] == 1.0 and perfect["kendall_tau"] == pytest.approx(1.0)
    assert preference_metrics([list(r) for r in ranks], ranks)["pair_accuracy"] == 0.0
    assert math.isnan(preference_metrics([[1.0, float("nan")]], [[1, 2]])["pair_accuracy"])


# ----------------------------------------------------------------------------- predict

def _score_column(path: Path) -> dict[str, float]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["image"]: float(row["score"]) for row in csv.DictReader(fh)}


def test_predict_prints_the_accuracy_of_its_own_scores(tmp_path, capsys):
    entries = json.loads(EXCERPT.read_text(encoding="utf-8"))
    _write_generations(entries, tmp_path / "images")
    checkpoint = tiny_checkpoint(tmp_path / "tiny.safetensors", seed=1)
    out = tmp_path / "scores.csv"
    assert main(["predict", "--preferences", str(EXCERPT), "--images", str(tmp_path / "images"), "--checkpoint",
                 str(checkpoint), "--resize", "224", "--patches", "1", "--workers", "0", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    scores = _score_column(out)
    assert len(scores) == len({n for e in entries for n in e["generations"]})
    expected = preference_metrics([[scores[n] for n in e["generations"]] for e in entries],
                                  [e["ranking"] for e in entries])
    found = re.search(r"pairwise accuracy ([\d.]+) over (\d+) ordered pairs; with ties as half ([\d.]+) over (\d+) "
                      r"pairs; Kendall tau (-?[\d.]+)", printed)
    assert float(found[1]) == pytest.approx(expected["pair_accuracy"], abs=5e-5)
    assert int(found[2]) == expected["pairs"]
    assert float(found[3]) == pytest.approx(expected["pair_accuracy_ties"], abs=5e-5)
    assert int(found[4]) == expected["pairs"] + expected["tied_pairs"]
    assert float(found[5]) == pytest.approx(expected["kendall_tau"], abs=5e-5)
