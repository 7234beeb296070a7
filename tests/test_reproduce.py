"""`ipce reproduce`: every row of the table on generated layouts of the four datasets (the real
annotation formats, tiny images, a tiny backbone, one epoch, two original splits), a row whose dataset
is absent skipped with its line, and a run killed with SIGKILL and resumed ending with the same table."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ipce.datasets.splits import original_splits
from ipce.presets.registry import paper_results

PAPER_RESULTS = paper_results()
from tests.datagen import LAYOUTS, csv_rows, image_paths, samples_dir, write_image

REPO = Path(__file__).resolve().parents[1]
ALL_ROWS = ["agiqa3k:quality", "agiqa3k:alignment", "aigciqa2023:quality", "aigciqa2023:authenticity",
            "aigciqa2023:correspondence", "aigcqa30k:quality", "agiqa1k:quality"]
# preset -> (annotation file, header rows, score columns) of the sample files (tests/data/annotation-samples)
FORMATS = {"agiqa1k": ("all.csv", 1, (2,)), "agiqa3k": ("data.csv", 1, (5, 7)),
           "aigciqa2023": ("all_set.csv", 1, (2, 3, 4)), "aigcqa30k": ("info_train.csv", 0, (2,))}
TINY = ["--backbone", "tiny", "--epochs", "1", "--resize", "224", "--train-patches", "1", "--eval-patches", "1",
        "--batch-size", "8", "--workers", "0", "--lr", "1e-3", "--no-progress", "--only-splits", "1,2"]


def build_layout(root: Path, preset: str, per_part: int = 5) -> None:
    """`preset`'s folder in its publisher's layout: the sample file's rows as templates (the real format),
    renamed to images of the original splits 1 and 2 (a few held out in each, a few trained on in both),
    scores drawn at random, a 32x32 image per row."""
    name, header, score_columns = FORMATS[preset]
    template = csv_rows(samples_dir() / LAYOUTS[preset][0] / name)
    head, body = template[:header], template[header:]
    originals = original_splits(preset)
    (train1, val1), (train2, val2) = originals.sides(1), originals.sides(2)
    both = [row for row in train1 if row in set(train2)]
    picked = list(dict.fromkeys(n for n, _ in val1[:per_part] + val2[:per_part] + both[:2 * per_part]))
    rng = np.random.default_rng(len(preset))
    rows = []
    for i, image in enumerate(picked):
        row = list(body[i % len(body)])
        cells = image.split("/", 1) if preset == "aigciqa2023" else [image]
        row[:len(cells)] = cells
        for column in score_columns:
            row[column] = f"{rng.uniform(0, 5):.4f}"
        rows.append(row)
    folder = root / LAYOUTS[preset][0]
    folder.mkdir(parents=True)
    with (folder / name).open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(head + rows)
    for i, path in enumerate(image_paths(preset, folder, name)):
        write_image(path, color=(int(rng.integers(256)), (i * 53) % 256, 90))


def reproduce(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ipce", "reproduce", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(args: list[str]) -> str:
    process = reproduce(args)
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out[-3000:]
    return out


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for preset in FORMATS:
        build_layout(root, preset)
    return root


@pytest.fixture(scope="module")
def whole(data_root, tmp_path_factory) -> tuple[Path, str]:
    """An uninterrupted reproduction of every row: (its folder, what it printed)."""
    out = tmp_path_factory.mktemp("whole") / "reproduction"
    return out, finished(["--data-root", str(data_root), "--out", str(out), *TINY])


@pytest.mark.slow
def test_every_row_filled_beside_the_papers_numbers(whole):
    out, printed = whole
    table = json.loads((out / "table.json").read_text())
    assert [r["row"] for r in table["rows"]] == ALL_ROWS and table["protocol"] == "paper"
    for row in table["rows"]:
        preset, target = row["row"].split(":")
        summary = json.loads((out / row["row"].replace(":", "-") / "summary.json").read_text())
        assert row["status"] == "done" and [s["split"] for s in row["per_split"]] == [1, 2]
        srcc = [s["srcc"] for s in summary["splits"]]
        assert row["ours"]["srcc"]["mean"] == pytest.approx(np.mean(srcc))
        assert row["ours"]["srcc"]["std"] == pytest.approx(np.std(srcc, ddof=1))
        paper = PAPER_RESULTS.get((preset, target))
        if paper:
            assert (row["paper"]["srcc"], row["paper"]["plcc"]) == paper
            assert row["difference"]["plcc"] == pytest.approx(row["ours"]["plcc"]["mean"] - paper[1])
        else:
            assert preset == "agiqa1k" and row["paper"] is None
    markdown = (out / "table.md").read_text()
    assert "| agiqa3k:quality | paper | original (2) |" in markdown and "0.8841" in markdown and "0.9274" in markdown
    assert "missing" in markdown  # the split files name images the generated data does not hold
    png = (out / "table.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "estimate: 7 rows, 14 splits, 14 epochs" in printed and "expected time: about" in printed


@pytest.mark.slow
def test_a_row_whose_dataset_is_absent_is_skipped_with_its_line(data_root, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    os.symlink(data_root / "AGIQA-3K", root / "AGIQA-3K")
    out = tmp_path / "reproduction"
    printed = finished(["--data-root", str(root), "--out", str(out), "--rows", "agiqa3k:quality,aigcqa30k",
                        *TINY])
    skipped = [line for line in printed.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 1 and skipped[0].startswith("skipped aigcqa30k:quality: ")
    assert "AIGCQA-30K-Image: dataset folder not found" in skipped[0]
    rows = json.loads((out / "table.json").read_text())["rows"]
    assert [(r["row"], r["status"]) for r in rows] == [("agiqa3k:quality", "done"), ("aigcqa30k:quality", "skipped")]
    assert "- aigcqa30k:quality: skipped: " in (out / "table.md").read_text()
    assert not (out / "aigcqa30k-quality").exists()


@pytest.mark.slow
def test_killed_and_resumed_ends_with_the_same_table(data_root, whole, tmp_path):
    out = tmp_path / "reproduction"
    args = ["--data-root", str(data_root), "--out", str(out), *TINY]
    victim = reproduce(args)
    progress = out / "aigciqa2023-quality" / "split1" / "result.json"  # the third row, part way
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None and not progress.is_file():
        time.sleep(0.05)
    assert victim.poll() is None, "the reproduction ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (out / "table.json").exists() and not (out / "aigciqa2023-quality" / "summary.json").exists()
    printed = finished(["--resume", "--out", str(out), "--no-progress"])
    assert "agiqa3k:quality: finished earlier, kept" in printed
    assert "aigciqa2023:quality: resuming" in printed
    # the table holds no timings: it equals the uninterrupted run's as it is
    assert json.loads((out / "table.json").read_text()) == json.loads((whole[0] / "table.json").read_text())
    assert (out / "table.md").read_text() == (whole[0] / "table.md").read_text()


def test_estimate_only_prints_and_writes_nothing(data_root, tmp_path, capsys):
    from ipce.cli import main

    out = tmp_path / "reproduction"
    assert main(["reproduce", "--data-root", str(data_root), "--out", str(out), "--estimate-only",
                 "--rows", "agiqa1k,aigcqa30k", *TINY, "--warmup-steps", "1"]) == 0
    printed = capsys.readouterr().out
    lines = [line.split() for line in printed.splitlines() if line.startswith("  ")]
    assert [line[0] for line in lines] == ["agiqa1k:quality", "aigcqa30k:quality"]
    assert all(line[1:5] == ["tiny", "2", "splits", "x"] for line in lines)
    assert "estimate: 2 rows, 4 splits, 4 epochs" in printed and "warm-up: tiny fp32, batch 1 x" in printed  # one image per step on a CPU
    assert not out.exists()


def test_rows_and_resume_errors_are_one_line(tmp_path, capsys):
    from ipce.cli import main

    assert main(["reproduce", "--resume", "--out", str(tmp_path / "none")]) == 1
    assert "reproduce.json not found" in capsys.readouterr().err
    assert main(["reproduce", "--rows", "agiqa3k:sharpness"]) == 1
    assert "--rows agiqa3k:sharpness: AGIQA-3K has no target 'sharpness'" in capsys.readouterr().err


@pytest.mark.parametrize("preset, expected", [
    ("agiqa3k", ["split 5 is the same split as split 4"]),
    ("aigcqa30k", ["splits 2, 3, 4, 5, 6, 7, 8, 9, 10: 1 held-out image(s) also in train (DALLE2_0000.png)"]),
])
def test_the_table_notes_name_the_published_quirks(preset, expected, tmp_path):
    from ipce.datasets.sources import load_dataset
    from ipce.datasets.splits import read_split_dir, write_original_split_dir
    from ipce.engine.reproduce import split_notes
    from tests.datagen import published_dir

    write_original_split_dir(preset, tmp_path)
    _, checks = read_split_dir(tmp_path, load_dataset(preset, published_dir(), subset="train").records)
    assert split_notes({"split_files": [c.to_dict() for c in checks]}) == expected


def test_durations_read_as_the_estimate_prints_them():
    from ipce.engine.reproduce import duration

    assert [duration(s) for s in (40, 25 * 60, 2.5 * 3600, 41 * 3600, 4793 * 3600)] == \
        ["about 40 s", "about 25 min", "about 2.5 h", "about 41 h", "about 4,793 h (200 days)"]
