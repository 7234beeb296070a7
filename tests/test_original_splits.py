"""The original authors' split folders shipped with ipce (ipce/presets/splits/*.json.xz): their exact
row counts, the same names as the published files, and `ipce splits --export original` folders that
read back to the same splits. The published folders are those of tests/data/published.tar.xz; the
counts below are those of ../shared/data/published/seed-splits/ (every row, no header)."""
from __future__ import annotations

import csv
import importlib.util
import json
import lzma
from pathlib import Path

import pytest

from ipce.cli import main
from ipce.datasets.sources import load_dataset
from ipce.datasets.splits import original_splits, read_split_dir
from ipce.errors import DataError
from tests.datagen import published_dir

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DATA = REPO / "ipce" / "presets" / "splits"
# preset -> (folder in Database/, header rows, {folder number: (train rows, val rows)})
COUNTS = {
    "agiqa1k": ("AGIQA-1K", 1, {k: (864, 216) for k in range(11)}),
    "agiqa3k": ("AGIQA-3K", 1, {1: (2382, 600), 2: (2384, 598), 3: (2387, 595), 4: (2385, 597), 5: (2385, 597),
                                6: (2389, 593), 7: (2389, 593), 8: (2384, 598), 9: (2389, 593), 10: (2388, 594)}),
    "aigciqa2023": ("AIGCIQA2023", 1, {k: (1920, 480) for k in range(1, 11)}),
    "aigcqa30k": ("AIGC", 0, {1: (12600, 1400), **{k: (12600, 1401) for k in range(2, 11)}}),
}


@pytest.fixture(scope="module")
def published() -> Path:
    return published_dir()


def names_in(path: Path, header: int) -> list[str]:
    """The image names of a split file, read with the csv module; AIGCIQA2023's are model/image_name."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [row for row in csv.reader(fh) if row][header:]
    two_columns = path.parents[1].name in ("AIGCIQA2023", "aigciqa2023")
    return [f"{row[0]}/{row[1]}" if two_columns else row[0] for row in rows]


@pytest.mark.parametrize("preset", list(COUNTS))
def test_shipped_splits_have_the_published_counts_and_names(preset, published):
    folder, header, counts = COUNTS[preset]
    shipped = original_splits(preset)
    assert shipped.folder == folder and shipped.numbers() == list(counts)
    for k, (n_train, n_val) in counts.items():
        train, val = shipped.sides(k)
        assert (len(train), len(val)) == (n_train, n_val), k
        original = published / "seed-splits" / folder / str(k)
        assert [name for name, _ in train] == names_in(original / "train.csv", header)
        assert [name for name, _ in val] == names_in(original / "val.csv", header)


def test_only_the_image_listed_twice_carries_its_scores():
    scored = {p: [row for row in original_splits(p).rows if row[1] is not None] for p in COUNTS}
    assert {p: len(rows) for p, rows in scored.items()} == {"agiqa1k": 2, "agiqa3k": 0, "aigciqa2023": 0,
                                                            "aigcqa30k": 0}
    assert [name for name, _ in scored["agiqa1k"]] == ["dreamStudio_8_9_1_1.jpg"] * 2
    assert sorted(score for _, score in scored["agiqa1k"]) == pytest.approx([0.441416, 2.084116], abs=1e-6)


def test_package_data_is_small_and_rebuilt_by_the_script(published, tmp_path):
    sizes = {p.name: p.stat().st_size for p in PACKAGE_DATA.glob("*.json.xz")}
    assert sorted(sizes) == sorted(f"{p}.json.xz" for p in COUNTS) and sum(sizes.values()) < 1_000_000
    spec = importlib.util.spec_from_file_location("build_original_splits",
                                                  REPO / "scripts" / "build_original_splits.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for preset in COUNTS:
        shipped = json.loads(lzma.decompress((PACKAGE_DATA / f"{preset}.json.xz").read_bytes()))
        assert script.build(published / "seed-splits", preset) == shipped


@pytest.mark.parametrize("preset", list(COUNTS))
def test_export_writes_the_same_names_and_reads_back_to_the_same_splits(preset, published, tmp_path, capsys):
    folder, header, counts = COUNTS[preset]
    out = tmp_path / preset
    assert main(["splits", "--export", "original", "--preset", preset, "--out", str(out)]) == 0
    assert f"Database/{folder} splits" in capsys.readouterr().out
    original = published / "seed-splits" / folder
    assert sorted(int(p.name) for p in out.iterdir()) == list(counts)
    for k in counts:
        for side in ("train", "val"):
            assert names_in(out / str(k) / f"{side}.csv", header) == names_in(original / str(k) / f"{side}.csv",
                                                                               header)
    records = load_dataset(preset, published, subset="train").records
    splits, checks = read_split_dir(out, records)
    expected_splits, expected_checks = read_split_dir(original, records)
    assert splits == expected_splits
    assert [c.to_dict() for c in checks] == [c.to_dict() for c in expected_checks]


def test_the_agiqa1k_duplicate_resolves_to_both_rows(published, tmp_path):
    out = tmp_path / "agiqa1k"
    main(["splits", "--export", "original", "--preset", "agiqa1k", "--out", str(out)])
    records = load_dataset("agiqa1k", published).records
    twice = [i for i, r in enumerate(records) if r.name == "dreamStudio_8_9_1_1.jpg"]
    splits, checks = read_split_dir(out, records)
    for (k, split), check in zip(splits, checks):
        sides = [("train" if i in split.train else "val") for i in twice]
        assert check.overlap == (1 if sides == ["train", "val"] or sides == ["val", "train"] else 0), k
        assert len(set(split.train) | set(split.val)) == 1080  # every record once, both rows of the image


def test_holdout_export_carves_validation_from_the_training_rows(tmp_path):
    from ipce.datasets.splits import write_original_split_dir

    out = tmp_path / "agiqa3k"
    assert write_original_split_dir("agiqa3k", out, [1, 4], holdout_ratios=(0.7, 0.1, 0.2), seed=3) == [1, 4]
    for k in (1, 4):
        train, val = original_splits("agiqa3k").sides(k)
        parts = {side: names_in(out / str(k) / f"{side}.csv", 1) for side in ("train", "val", "test")}
        assert parts["test"] == [name for name, _ in val]
        assert sorted(parts["train"] + parts["val"]) == sorted(name for name, _ in train)
        assert len(parts["val"]) == round(len(train) / 8)  # 0.1 of 0.7 + 0.1
    assert names_in(out / "1" / "val.csv", 1) != names_in(out / "4" / "val.csv", 1)
    with pytest.raises(DataError, match="holds a split that is not one of agiqa3k's folders"):
        write_original_split_dir("agiqa3k", out, [2])
