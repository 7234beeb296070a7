"""check_records and `ipce check-data`."""
from __future__ import annotations

import csv

import pytest

from ipce.cli import main
from ipce.datasets.checks import check_records, count_long_prompts, filter_bad
from ipce.datasets.sources import Record, load_custom, load_dataset
from tests.datagen import build_custom, build_preset, write_image

BAD = {1: "missing", 2: "empty", 3: "text", 4: "truncated"}


def _report_rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("workers", [1, 3])
def test_check_records_finds_every_bad_image(tmp_path, workers):
    annotations, images = build_custom(tmp_path, n=8, bad=BAD)
    records = load_custom(annotations, images).usable()
    report = check_records(records, workers=workers, progress=False)
    assert report.records == 8
    assert report.images_found == 7  # only the missing one is not found
    assert report.by_kind() == {"empty": 1, "missing": 1, "not-an-image": 1, "truncated": 1}
    assert not report.ok
    bad_paths = {str(records[i].image) for i in BAD}
    assert {p.path for p in report.problems} == bad_paths
    assert {p.row for p in report.problems} == {i + 2 for i in BAD}
    assert all(p.path in p.message for p in report.problems)
    assert report.score_min == 1.0 and report.score_max == 4.5
    kept = filter_bad(records, report)
    assert [r.name for r in kept] == [records[i].name for i in (0, 5, 6, 7)]
    assert check_records(kept, progress=False).ok


def test_long_prompts_are_counted_on_the_scoring_text(tmp_path):
    # "a photo that perfectly matches '<k x cat>'" is 7 + k tokens, + start/end = k + 9: over 77 from k = 69
    assert count_long_prompts([" ".join(["cat"] * 68)]) == 0
    assert count_long_prompts([" ".join(["cat"] * 69)]) == 1
    write_image(tmp_path / "a.png")
    records = [Record(image=tmp_path / "a.png", prompt=p, target=None, name=f"{i}.png")
               for i, p in enumerate(["a cat", " ".join(["dog"] * 69), " ".join(["dog"] * 69)])]
    report = check_records(records, progress=False)
    assert report.long_prompts == 2 and report.ok
    assert report.score_min is None and report.score_max is None


def test_cli_bad_layout_exits_1_and_reports_the_paths(tmp_path, capsys):
    folder = build_preset("agiqa3k", tmp_path)
    records = load_dataset("agiqa3k", tmp_path).usable()
    (folder / records[3].name).write_bytes(b"")
    (folder / records[7].name).unlink()
    truncated = folder / records[9].name
    write_image(truncated, size=(64, 64), seed=1)
    truncated.write_bytes(truncated.read_bytes()[:300])
    report = tmp_path / "out" / "problems.csv"
    code = main(["check-data", "--preset", "agiqa3k", "--data-root", str(tmp_path), "--report", str(report),
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert "records: 33" in out and "images found: 32 of 33" in out
    assert "empty 1" in out and "missing 1" in out and "truncated 1" in out
    assert "score range: 0.1953 .. 3.907" in out
    rows = _report_rows(report)
    assert {r["path"] for r in rows} == {str(records[i].image) for i in (3, 7, 9)}
    assert {r["row"] for r in rows} == {str(records[i].row) for i in (3, 7, 9)}
    assert all(r["problem"] for r in rows)


def test_cli_clean_layout_exits_0(tmp_path, capsys):
    build_preset("aigciqa2023", tmp_path)
    report = tmp_path / "problems.csv"
    code = main(["check-data", "--preset", "aigciqa2023", "--data-root", str(tmp_path), "--target", "correspondence",
                 "--report", str(report), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "records: 30" in out and "problems: none" in out and "prompts over 77 tokens: 0" in out
    assert _report_rows(report) == []


def test_cli_custom_form(tmp_path, capsys):
    annotations, images = build_custom(tmp_path, n=4, bad={2: "text"})
    code = main(["check-data", "--annotations", str(annotations), "--images", str(images), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1 and "not-an-image 1" in out and str(images / "gen0_002.png") in out
    annotations.write_text("name,text\ngen0_000.png,a prompt\n")
    code = main(["check-data", "--annotations", str(annotations), "--images", str(images), "--image-col", "name",
                 "--prompt-col", "text", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "scores: none" in out


def test_cli_annotation_error_is_reported_with_its_row(tmp_path, capsys):
    annotations, images = build_custom(tmp_path, n=3)
    lines = annotations.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",oops"
    annotations.write_text("\n".join(lines) + "\n")
    report = tmp_path / "r.csv"
    code = main(["check-data", "--annotations", str(annotations), "--images", str(images), "--report", str(report),
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1 and str(annotations) in out and "row 3" in out
    (row,) = _report_rows(report)
    assert row["path"] == str(annotations) and row["row"] == "3" and row["problem"].startswith("bad-score: ")


def test_cli_missing_dataset_and_bad_flags(tmp_path, capsys):
    assert main(["check-data", "--preset", "agiqa1k", "--data-root", str(tmp_path), "--no-progress"]) == 1
    assert "https://github.com/lcysyzxdxc/AGIQA-1k-Database" in capsys.readouterr().out
    assert main(["check-data", "--preset", "nosuch", "--data-root", str(tmp_path)]) == 1
    assert "ipce: error: --preset nosuch" in capsys.readouterr().err
    assert main(["check-data", "--annotations", "x.csv"]) == 1
    assert "--images" in capsys.readouterr().err


def test_one_run_lists_every_bad_row_bad_image_and_duplicate(tmp_path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 64x64 picture is then a decompression bomb
    images = tmp_path / "imgs"
    for name in ("ok.png", "dup.png", "yak.png"):
        write_image(images / name, size=(16, 16))
    write_image(images / "bomb.png", size=(64, 64))
    (images / "empty.png").write_bytes(b"")
    (images / "text.png").write_text("not an image")
    write_image(images / "cut.png", size=(30, 30), seed=3)
    (images / "cut.png").write_bytes((images / "cut.png").read_bytes()[:200])
    lines = ["image,prompt,mos", "ok.png,a cat,1", ",no name,2", "ok.png,,3", "dup.png,a dog,x", "dup.png,a dog,2",
             "dup.png,a dog,4", "gone.png,a fox,1", "empty.png,an owl,1", "text.png,a bee,1", "cut.png,a cow,1",
             "yak.png,a yak,inf", "bomb.png,a bomb,1"]
    (tmp_path / "l.csv").write_text("\n".join(lines) + "\n")
    report = tmp_path / "r.csv"
    code = main(["check-data", "--annotations", str(tmp_path / "l.csv"), "--images", str(images),
                 "--target-col", "mos", "--no-progress", "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 1
    rows = _report_rows(report)
    found = sorted((int(r["row"]), r["severity"], r["problem"].split(":", 1)[0]) for r in rows)
    assert found == [(3, "error", "empty-name"), (4, "error", "empty-prompt"), (5, "error", "bad-score"),
                     (6, "warning", "duplicate"), (8, "error", "missing"), (9, "error", "empty"),
                     (10, "error", "not-an-image"), (11, "error", "truncated"), (12, "error", "bad-score"),
                     (13, "error", "too-large")]
    assert "rows: 12 in the annotations, 8 usable" in out
    assert "problems: 9 (bad-score 2, empty 1, empty-name 1, empty-prompt 1, missing 1, not-an-image 1, " \
           "too-large 1, truncated 1)" in out
    assert "warnings: 1 (duplicate 1" in out and "rows 6 (score 2) and 7 (score 4)" in out


def test_every_reported_row_names_its_image(tmp_path, capsys):
    images = tmp_path / "imgs"
    names = [f"pic{i:02d}.png" for i in range(2, 16)]  # rows 2..15
    for name in names[:-2]:
        write_image(images / name, size=(8, 8))
    lines = ["image,prompt,mos", *(f"{name},a cat,1" for name in names)]
    lines[-1] = f"{names[-1]},a cat,oops"  # row 15: bad score; row 14: image missing
    (tmp_path / "l.csv").write_text("\n".join(lines) + "\n")
    report = tmp_path / "r.csv"
    assert main(["check-data", "--annotations", str(tmp_path / "l.csv"), "--images", str(images),
                 "--target-col", "mos", "--no-progress", "--report", str(report)]) == 1
    out = capsys.readouterr().out
    assert "bad-score (row 15, image 'pic15.png'): " in out and "missing (row 14, image 'pic14.png'): " in out
    assert {(r["row"], r["image"], r["problem"].split(":")[0]) for r in _report_rows(report)} == \
        {("15", "pic15.png", "bad-score"), ("14", "pic14.png", "missing")}


def test_scores_off_the_model_scale_point_to_mos_range(tmp_path, capsys):
    images = tmp_path / "imgs"
    write_image(images / "a.png", size=(8, 8))
    write_image(images / "b.png", size=(8, 8))
    (tmp_path / "l.csv").write_text("image,prompt,mos\na.png,x,12\nb.png,y,87.5\n")
    args = ["check-data", "--annotations", str(tmp_path / "l.csv"), "--images", str(images), "--target-col", "mos",
            "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "score range: 12 .. 87.5" in out and "--mos-range" in out
    (tmp_path / "l.csv").write_text("image,prompt,mos\na.png,x,1\nb.png,y,4.5\n")
    assert main(args) == 0 and "--mos-range" not in capsys.readouterr().out


def test_odd_prompts_are_counted_once_per_run(tmp_path, capsys):
    from ipce.datasets.checks import prompt_warnings

    long = " ".join(["cat"] * 80)
    lines = prompt_warnings(["a cat", "", long, long, "一只猫坐在沙发上", "кошка на диване", "café au lait"])
    assert len(lines) == 3  # one line per kind, however many prompts have it
    assert lines[0].startswith("1 of 7 prompts are empty")
    assert lines[1].startswith("2 of 7 prompts are cut at CLIP's 77 tokens")
    assert lines[2].startswith("2 of 7 prompts are mostly non-Latin letters")  # "café" is Latin
    assert prompt_warnings(["a cat", "two dogs on a sofa"]) == []
    images = tmp_path / "imgs"
    for name in ("a.png", "b.png"):
        write_image(images / name, size=(8, 8))
    (tmp_path / "l.csv").write_text("image,prompt\na.png,一只猫坐在沙发上\nb.png,a dog\n", encoding="utf-8")
    assert main(["check-data", "--annotations", str(tmp_path / "l.csv"), "--images", str(images),
                 "--no-progress"]) == 0
    assert "prompts mostly in non-Latin letters: 1" in capsys.readouterr().out
