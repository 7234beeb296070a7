"""The whole published annotation and split files (tests/data/published.tar.xz), read exactly.

Expected counts are taken from the files themselves with the csv module / openpyxl,
independently of ipce's readers; the few facts the datasets' READMEs state (1,080
AGIQA-1K rows with one image listed twice, AGIQA-3K splits 4 and 5 identical, the
AIGC first-row overlap in splits 2..10) are asserted as such.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from ipce.cli import main
from ipce.datasets.sources import load_dataset
from ipce.datasets.splits import read_split_dir
from tests.datagen import published_dir, write_image

# preset -> (dataset folder, split folder, subset, header rows in the split files)
SPLIT_FOLDERS = {
    "agiqa1k": ("AGIQA-1K", "AGIQA-1K", "all", 1),
    "agiqa3k": ("AGIQA-3K", "AGIQA-3K", "all", 1),
    "aigciqa2023": ("AIGCIQA2023", "AIGCIQA2023", "all", 1),
    "aigcqa30k": ("AIGCQA-30K-Image", "AIGC", "train", 0),
}


@pytest.fixture(scope="module")
def published() -> Path:
    return published_dir()


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [row for row in csv.reader(fh) if row]


def _only(root: Path, dataset_folder: str, files: list[str], published: Path) -> Path:
    """A data root holding just `files` of one dataset (to read one published form)."""
    folder = root / dataset_folder
    folder.mkdir(parents=True)
    for name in files:
        shutil.copy(published / dataset_folder / name, folder / name)
    return root


@pytest.mark.parametrize("form", ["all.csv", "AIGC_MOS_Zscore.xlsx"])
def test_agiqa1k_every_row_with_one_duplicate_warning(tmp_path, published, form):
    found = load_dataset("agiqa1k", _only(tmp_path, "AGIQA-1K", [form], published))
    body = _rows(published / "AGIQA-1K" / "all.csv")[1:]
    assert found.rows == len(found.records) == len(body) == 1080 and not found.problems
    assert [r.name for r in found.records] == [row[0] for row in body]
    assert [r.target for r in found.records] == pytest.approx([float(row[2]) for row in body], abs=1e-9)
    (warning,) = found.warnings
    assert warning.kind == "duplicate" and "dreamStudio_8_9_1_1.jpg" in warning.message
    assert "rows 1080 (score 0.441416) and 1081 (score 2.08412)" in warning.message
    assert len(load_dataset("agiqa1k", tmp_path, duplicates="first").records) == 1079


@pytest.mark.parametrize("target, column", [("quality", "mos_quality"), ("alignment", "mos_align")])
def test_agiqa3k_every_row_both_targets(published, target, column):
    found = load_dataset("agiqa3k", published, target=target)
    header, *body = _rows(published / "AGIQA-3K" / "data.csv")
    at = header.index(column)
    assert len(found.records) == len(body) == 2982 and not found.problems and not found.warnings
    assert [(r.name, r.prompt) for r in found.records] == [(row[0], row[1]) for row in body]
    assert [r.target for r in found.records] == [float(row[at]) for row in body]


@pytest.mark.parametrize("target, column", [("quality", 2), ("authenticity", 3), ("correspondence", 4)])
def test_aigciqa2023_all_set_every_row_every_target(published, target, column):
    found = load_dataset("aigciqa2023", published, target=target)
    body = _rows(published / "AIGCIQA2023" / "all_set.csv")[1:]
    assert len(found.records) == len(body) == 2400 and not found.problems
    assert [r.name for r in found.records] == [f"{row[0]}/{row[1]}" for row in body]
    assert [r.prompt for r in found.records] == [row[5][1:-1] for row in body]  # the extra quotes go
    assert [r.target for r in found.records] == [float(row[column]) for row in body]
    assert {r.generator for r in found.records} == {row[0] for row in body}


@pytest.mark.parametrize("subset, rows, scored", [("train", 14000, True), ("val", 2000, False), ("test", 4000, False)])
def test_aigcqa30k_headerless_csv_every_row(published, subset, rows, scored):
    found = load_dataset("aigcqa30k", published, subset=subset)
    body = _rows(published / "AIGCQA-30K-Image" / f"info_{subset}.csv")
    assert len(found.records) == len(body) == rows and not found.problems and not found.warnings
    assert [r.name for r in found.records] == [row[0] for row in body]
    assert [r.image.parent.name for r in found.records[:1]] == [subset]
    if scored:
        assert [r.target for r in found.records] == [float(row[2]) for row in body]
    else:
        assert all(r.target is None for r in found.records)


@pytest.mark.parametrize("subset", ["train", "val"])
def test_aigcqa30k_spreadsheets_equal_the_csv(tmp_path, published, subset):
    from_xlsx = load_dataset("aigcqa30k", _only(tmp_path, "AIGCQA-30K-Image", [f"info_{subset}.xlsx"], published),
                             subset=subset)
    from_csv = load_dataset("aigcqa30k", published, subset=subset)
    assert from_xlsx.source.suffix == ".xlsx" and not from_xlsx.problems
    assert [(r.name, r.prompt, r.target) for r in from_xlsx.records] == \
        [(r.name, r.prompt, r.target) for r in from_csv.records]


def _names(path: Path, header: int) -> list[str]:
    rows = _rows(path)[header:]
    if rows and len(rows[0]) == 6 and rows[0][1].endswith(".png"):  # AIGCIQA2023: model,image_name,...
        return [f"{row[0]}/{row[1]}" for row in rows]
    return [row[0] for row in rows]


@pytest.mark.parametrize("preset", list(SPLIT_FOLDERS))
def test_every_original_split_folder_with_its_exact_counts(published, preset):
    dataset_folder, split_folder, subset, header = SPLIT_FOLDERS[preset]
    folder = published / "seed-splits" / split_folder
    numbered, checks = read_split_dir(folder, load_dataset(preset, published, subset=subset).records)
    expected_numbers = sorted(int(p.name) for p in folder.iterdir())
    assert [c.split for c in checks] == [n for n, _ in numbered] == expected_numbers
    for check in checks:
        train = _names(folder / str(check.split) / "train.csv", header)
        val = _names(folder / str(check.split) / "val.csv", header)
        assert (check.train, check.val) == (len(train), len(val)), check.line()  # every row, the first included
        assert check.missing == 0 and check.repeated == 0
        assert check.overlap == len(set(train) & set(val)), check.line()
    if preset == "aigcqa30k":
        assert [c.overlap for c in checks] == [0] + [1] * 9
        assert all(c.examples["overlap"] == ["DALLE2_0000.png"] for c in checks[1:])
        assert (checks[1].train, checks[1].val) == (12600, 1401)
    if preset == "agiqa3k":
        assert [c.same_as for c in checks] == [None] * 4 + [4] + [None] * 5
    if preset == "agiqa1k":  # the image listed twice: its two rows on opposite sides in four splits
        assert expected_numbers == list(range(11))
        assert [c.overlap for c in checks] == [0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 1]


def test_drop_overlap_cleans_the_aigc_splits(published):
    records = load_dataset("aigcqa30k", published).records
    numbered, checks = read_split_dir(published / "seed-splits" / "AIGC", records, drop_overlap=True)
    assert [c.val for c in checks] == [1400] * 10 and [c.dropped for c in checks] == [0] + [1] * 9
    for _, split in numbered:
        assert not set(split.train) & set(split.val)


def test_splits_from_prints_one_line_per_split_and_json(published, capsys):
    args = ["splits", "--preset", "aigcqa30k", "--data-root", str(published),
            "--from", str(published / "seed-splits" / "AIGC")]
    assert main(args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("split ")]
    assert len(lines) == 10 and lines[1].startswith("split 2: train 12600, val 1401, missing 0, overlap 1")
    assert main(args + ["--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [sorted(item) for item in listed] == [["missing", "overlap", "split", "train", "val"]] * 10
    assert [item["overlap"] for item in listed] == [0] + [1] * 9 and listed[0]["split"] == 1


def test_check_data_on_the_whole_agiqa1k_warns_and_passes(tmp_path, published, capsys):
    root = _only(tmp_path, "AGIQA-1K", ["all.csv"], published)
    for row in _rows(published / "AGIQA-1K" / "all.csv")[1:]:
        path = root / "AGIQA-1K" / "file" / row[0]
        if not path.exists():
            write_image(path, size=(8, 8))
    report = tmp_path / "report.csv"
    code = main(["check-data", "--preset", "agiqa1k", "--data-root", str(root), "--no-progress",
                 "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out  # a warning alone never fails the check
    assert "rows: 1080 in the annotations, 1080 usable" in out and "problems: none" in out
    assert "warnings: 1 (duplicate 1" in out and "dreamStudio_8_9_1_1.jpg" in out
    rows = list(csv.DictReader(report.open(encoding="utf-8")))
    assert [(r["severity"], r["row"]) for r in rows] == [("warning", "1080")]
