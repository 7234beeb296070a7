"""Seeded, grouped and three-way splits; split folders on disk."""
from __future__ import annotations

from pathlib import Path

import pytest

from ipce.cli import main
from ipce.datasets.sources import Record, load_custom
from ipce.datasets.splits import (Split, holdout_splits, random_splits, read_split_dir,
                                  write_split_dir)
from ipce.errors import DataError
from tests.datagen import write_image


def _splits(directory, records, drop_overlap: bool = False) -> list[Split]:
    """The splits `read_split_dir` finds, in folder order."""
    return [split for _, split in read_split_dir(directory, records, drop_overlap)[0]]


def _records(n: int, prompts: int | None = None, root: Path = Path("/data/set")) -> list[Record]:
    out = []
    for i in range(n):
        name = f"gen{i % 3}_{i:04d}.png"
        prompt = f"prompt {i % prompts if prompts else i}"
        out.append(Record(image=root / name, prompt=prompt, target=float(i % 7) / 2, name=name,
                          generator=f"gen{i % 3}", row=i + 2))
    return out


def _complete_and_disjoint(split: Split, n: int):
    parts = [set(split.train), set(split.val), set(split.test)]
    assert sum(len(p) for p in parts) == n == len(set().union(*parts))


def test_same_seed_same_splits_and_sizes():
    records = _records(100)
    a = random_splits(records, n=10, ratio=0.8, seed=7)
    b = random_splits(records, n=10, ratio=0.8, seed=7)
    assert a == b and len(a) == 10
    for split in a:
        assert len(split.train) == 80 and len(split.val) == 20 and tuple(split.test) == ()
        _complete_and_disjoint(split, 100)
    assert len({tuple(s.val) for s in a}) == 10  # pairwise distinct
    assert random_splits(records, n=3, seed=7) == a[:3]  # split k does not depend on n


def test_different_seeds_differ():
    records = _records(100)
    a = random_splits(records, n=5, seed=1)
    b = random_splits(records, n=5, seed=2)
    assert all(x.val != y.val for x, y in zip(a, b))
    assert random_splits(records, n=1)[0] == random_splits(records, n=1, seed=20200626)[0]


def test_tiny_data_cannot_give_ten_distinct_splits():
    with pytest.raises(DataError) as info:
        random_splits(_records(4), n=10)
    assert "--n" in str(info.value)
    assert len(random_splits(_records(4), n=4)) == 4  # exactly the four possible 3/1 splits


def test_bad_ratio_and_n():
    with pytest.raises(DataError):
        random_splits(_records(10), ratio=1.0)
    with pytest.raises(DataError):
        random_splits(_records(10), n=0)
    with pytest.raises(DataError):
        holdout_splits(_records(10), ratios=(0.5, 0.1, 0.1))


def test_grouped_splits_never_share_a_prompt():
    records = _records(300, prompts=60)  # every prompt on 5 records
    splits = random_splits(records, n=10, group_by="prompt", seed=3)
    for split in splits:
        _complete_and_disjoint(split, 300)
        train_prompts = {records[i].prompt for i in split.train}
        val_prompts = {records[i].prompt for i in split.val}
        assert not train_prompts & val_prompts
        assert len(split.train) == 240
    ungrouped = random_splits(records, n=1, seed=3)[0]
    assert {records[i].prompt for i in ungrouped.train} & {records[i].prompt for i in ungrouped.val}


def test_grouped_by_generator_and_unequal_groups():
    records = _records(30)
    for split in random_splits(records, n=3, ratio=0.6, group_by="generator"):
        assert not {records[i].generator for i in split.train} & {records[i].generator for i in split.val}
        _complete_and_disjoint(split, 30)
    with pytest.raises(DataError):
        random_splits(records, group_by="colour")


def test_holdout_three_parts_disjoint_and_complete():
    records = _records(200, prompts=50)
    splits = holdout_splits(records, n=5, seed=11)
    assert splits == holdout_splits(records, n=5, seed=11)
    for split in splits:
        _complete_and_disjoint(split, 200)
        assert (len(split.train), len(split.val), len(split.test)) == (140, 20, 40)
    for split in holdout_splits(records, n=3, group_by="prompt"):
        _complete_and_disjoint(split, 200)
        sides = [{records[i].prompt for i in part} for part in (split.train, split.val, split.test)]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])


def test_write_then_import_round_trips(tmp_path):
    records = _records(40)
    splits = random_splits(records, n=3)
    write_split_dir(tmp_path / "splits", records, splits)
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == ["1", "2", "3"]
    lines = (tmp_path / "splits" / "1" / "val.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "image,prompt,mos" and len(lines) == 1 + len(splits[0].val)
    assert not list((tmp_path / "splits").rglob("*.tmp"))
    assert _splits(tmp_path / "splits", records) == splits
    three = holdout_splits(records, n=2)
    write_split_dir(tmp_path / "three", records, three)
    assert _splits(tmp_path / "three", records) == three
    # rewriting a folder with two-way splits drops the stale test.csv, and extra folders are refused
    write_split_dir(tmp_path / "three", records, splits[:2])
    assert _splits(tmp_path / "three", records) == splits[:2]
    with pytest.raises(DataError) as info:
        write_split_dir(tmp_path / "splits", records, splits[:1])
    assert str(tmp_path / "splits" / "2") in str(info.value)


def test_import_gives_exactly_the_rows_in_numeric_folder_order(tmp_path):
    records = _records(12)
    # AIGCQA-30K style (no header), folders 1..11 so that "10" and "11" sort after "9"
    for k in range(1, 12):
        folder = tmp_path / str(k)
        folder.mkdir()
        (folder / "train.csv").write_text("".join(f"{records[i].name},{records[i].prompt},1\n" for i in (k, 0)))
        (folder / "val.csv").write_text(f"{records[k % 11 + 1].name},p,2\n")
    splits = _splits(tmp_path, records)
    assert [s.train for s in splits] == [[k, 0] for k in range(1, 12)]
    assert [s.val for s in splits] == [[k % 11 + 1] for k in range(1, 12)]


def test_import_dataset_formats_and_basename_match(tmp_path):
    records = [Record(image=Path(f"/d/{m}/{n}"), prompt=f"p{i}", target=1.0, name=f"{m}/{n}", generator=m)
               for i, (m, n) in enumerate([("DALLE", "001-1.png"), ("Glide", "001-1.png"), ("Glide", "002-1.png")])]
    folder = tmp_path / "0"
    folder.mkdir()
    # AIGCIQA2023's own format: model + image_name columns
    (folder / "train.csv").write_text('model,image_name,mosz1,mosz2,mosz3,prompt\nGlide,001-1.png,1,2,3,"""x"""\n'
                                      'DALLE,001-1.png,1,2,3,"""y"""\n')
    (folder / "val.csv").write_text("name,prompt\n002-1.png,z\n")  # unique base name is enough
    assert _splits(tmp_path, records) == [Split(train=[1, 0], val=[2])]
    (folder / "val.csv").write_text("name,prompt\n001-1.png,z\n002-1.png,z\n")  # ambiguous base name
    [(number, split)], [check] = read_split_dir(tmp_path, records)
    assert number == 0 and split.val == [2]
    assert check.missing == 1 and "001-1.png (row 2: matches 2 records by base name)" in check.examples["missing"]
    (folder / "val.csv").write_text("model,image_name\nLafite,002-1.png\n")  # another folder: another image
    [(_, split)], [check] = read_split_dir(tmp_path, records)
    assert split.val == [] and "Lafite/002-1.png (row 2: matches no record)" in check.examples["missing"]


def test_unknown_names_are_counted_as_missing_with_examples(tmp_path):
    records = _records(5)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "train.csv").write_text(f"image,prompt,mos\n{records[0].name},a,1\nghost.png,b,2\n")
    (tmp_path / "1" / "val.csv").write_text(f"image,prompt,mos\n{records[1].name},a,1\nspook.png,b,2\n")
    [(_, split)], [check] = read_split_dir(tmp_path, records)
    assert split == Split(train=[0], val=[1])
    assert check.counts() == {"split": 1, "train": 1, "val": 1, "missing": 2, "overlap": 0}
    assert check.examples["missing"] == ["ghost.png (row 3: matches no record)", "spook.png (row 3: matches no record)"]
    assert "missing 2" in check.line() and "ghost.png" in check.line()


def test_overlap_is_counted_kept_by_default_and_dropped_on_request(tmp_path):
    records = _records(5)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "train.csv").write_text(f"{records[0].name},a,1\n{records[1].name},a,1\n")
    with pytest.raises(DataError) as info:
        _splits(tmp_path, records)
    assert "val.csv" in str(info.value)
    (tmp_path / "1" / "val.csv").write_text(f"{records[1].name},a,1\n{records[2].name},a,1\n{records[2].name},a,1\n")
    [(_, split)], [check] = read_split_dir(tmp_path, records)
    assert split == Split(train=[0, 1], val=[1, 2])  # as published: the record is on both sides
    assert (check.overlap, check.repeated, check.dropped) == (1, 1, 0)
    assert check.examples["overlap"] == [records[1].name]
    [(_, clean)], [dropped] = read_split_dir(tmp_path, records, drop_overlap=True)
    assert clean == Split(train=[0, 1], val=[2]) and dropped.dropped == 1 and dropped.val == 1
    with pytest.raises(DataError):
        _splits(tmp_path / "empty", records)


def test_records_of_the_same_name_are_told_apart_by_the_score_in_the_row(tmp_path):
    # AGIQA-1K lists one image twice with two scores; the original split files carry either row
    records = [Record(image=Path("/d/a.jpg"), prompt="p", target=t, name="a.jpg", row=r)
               for r, t in ((2, 0.4414155439958131), (3, 2.084115711537598))]
    records.append(Record(image=Path("/d/b.jpg"), prompt="p", target=1.0, name="b.jpg", row=4))
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "train.csv").write_text('Image,Prompt,MOS\na.jpg,"p",2.084115711537598\nb.jpg,p,1\n')
    (tmp_path / "1" / "val.csv").write_text("Image,Prompt,MOS\na.jpg,p,0.4414155439958131\n")
    [(_, split)], [check] = read_split_dir(tmp_path, records)
    assert split == Split(train=[1, 2], val=[0])  # each row its own record, by the score it carries
    assert check.overlap == 1  # but the image itself is on both sides
    (tmp_path / "1" / "train.csv").write_text("Image,Prompt,MOS\na.jpg,p,0.4414155439958131\n"
                                              "a.jpg,p,2.084115711537598\n")
    assert _splits(tmp_path, records)[0].train == [0, 1]


def test_a_folder_equal_to_an_earlier_one_is_named(tmp_path):
    records = _records(6)
    for k in (1, 2, 3):
        (tmp_path / str(k)).mkdir()
        val = [k % 2]
        (tmp_path / str(k) / "train.csv").write_text("".join(f"{r.name},p,1\n" for i, r in enumerate(records)
                                                         if i not in val))
        (tmp_path / str(k) / "val.csv").write_text("".join(f"{records[i].name},p,1\n" for i in val))
    _, checks = read_split_dir(tmp_path, records)
    assert [c.same_as for c in checks] == [None, None, 1]
    assert "the same split as 1" in checks[2].line()


def test_splits_command_writes_the_layout(tmp_path, capsys):
    images = tmp_path / "imgs"
    lines = ["image,prompt,mos"]
    for i in range(20):
        write_image(images / f"g_{i}.png", size=(8, 8))
        lines.append(f"g_{i}.png,prompt {i % 5},{i / 4}")
    (tmp_path / "l.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    code = main(["splits", "--annotations", str(tmp_path / "l.csv"), "--images", str(images), "--out", str(out),
                 "--n-splits", "4", "--seed", "5", "--group-by", "prompt"])
    assert code == 0
    assert "4 split(s)" in capsys.readouterr().out
    records = load_custom(tmp_path / "l.csv", images).usable()
    assert _splits(out, records) == random_splits(records, n=4, seed=5, group_by="prompt")
