"""Readers for every published annotation format (built from the real sample rows) and bad input."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ipce.datasets.sources import DATASETS, Record, load_custom, load_dataset
from ipce.errors import DataError
from tests.datagen import build_preset, csv_rows, require_samples, write_image, xlsx_rows


def _error(call, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value)
    return info.value


def _usable_error(load, *args, **kwargs) -> DataError:
    """The error of `load(...).usable()`: the reader's, or the first bad row's with the count of the rest."""
    return _error(lambda: load(*args, **kwargs).usable())


def _check_paths(records: list[Record]):
    for rec in records:
        assert rec.image.is_absolute() and rec.image.is_file(), rec.image
        assert rec.source is not None and rec.source.is_file()


# ----------------------------------------------------------------------------- presets

def test_dataset_table_is_complete():
    assert set(DATASETS) == {"agiqa1k", "agiqa3k", "aigciqa2023", "aigcqa30k"}
    assert DATASETS["agiqa3k"].targets == {"quality": "mos_quality", "alignment": "mos_align"}
    assert DATASETS["aigciqa2023"].targets["correspondence"] == "mosz3"
    assert DATASETS["aigciqa2023"].default_target == "quality"
    assert DATASETS["aigcqa30k"].subsets == ("train", "val", "test")
    for info in DATASETS.values():
        assert info.url.startswith("https://") and info.description and info.folder


def test_agiqa1k_csv(tmp_path):
    samples = require_samples()
    build_preset("agiqa1k", tmp_path, files=["all.csv"])
    records = load_dataset("agiqa1k", tmp_path).usable()
    assert len(records) == len(csv_rows(samples / "AGIQA-1K" / "all.csv")) - 1 == 24
    first = records[0]
    assert first.name == "deepai_1_13_1_0.jpg"
    assert first.prompt == "cat, wearing hat, wild, anime style"
    assert first.target == pytest.approx(2.7415230647591637)
    assert first.generator == "deepai" and first.row == 2
    assert first.image == (tmp_path / "AGIQA-1K" / "file" / "deepai_1_13_1_0.jpg").absolute()
    assert records[-1].generator == "dreamStudio" and records[-1].row == 25
    assert load_dataset("agiqa1k", tmp_path, subset="all").usable() == records
    _check_paths(records)


def test_agiqa1k_prefers_all_csv_and_falls_back_to_the_spreadsheet(tmp_path):
    samples = require_samples()
    folder = build_preset("agiqa1k", tmp_path)  # both files present
    assert load_dataset("agiqa1k", tmp_path).usable()[0].source.name == "all.csv"
    (folder / "all.csv").unlink()
    records = load_dataset("agiqa1k", tmp_path).usable()
    sheet = xlsx_rows(samples / "AGIQA-1K" / "AIGC_MOS_Zscore.xlsx")
    assert len(records) == len(sheet) - 1 == 24
    assert records[0].source.name == "AIGC_MOS_Zscore.xlsx"
    assert records[0].name == sheet[1][0] and records[0].prompt == sheet[1][1]
    assert records[0].target == pytest.approx(float(sheet[1][2]))
    assert records[0].row == 2 and records[-1].row == 25
    _check_paths(records)


def test_agiqa3k_targets_commas_and_apostrophes(tmp_path):
    require_samples()
    build_preset("agiqa3k", tmp_path)
    records = load_dataset("agiqa3k", tmp_path).usable()
    assert len(records) == 33
    by_name = {r.name: r for r in records}
    rec = by_name["AttnGAN_normal_279.jpg"]
    assert rec.prompt == ("table with everything ready for 5 o'clock at flower garden, elevation view, "
                          "long-shot, baroque style")
    assert rec.target == pytest.approx(0.807856712)
    assert by_name["AttnGAN_normal_053.jpg"].prompt == "castle from howl's sticker"
    assert by_name["sd1.5_lowcorr_072.jpg"].generator == "sd1.5"
    assert by_name["xl2.2_normal_039.jpg"].generator == "xl2.2"
    aligned = {r.name: r.target for r in load_dataset("agiqa3k", tmp_path, target="alignment").usable()}
    assert aligned["AttnGAN_normal_279.jpg"] == pytest.approx(0.686697692)
    assert load_dataset("agiqa3k", tmp_path, target="mos_align").usable()[0].target == pytest.approx(0.40889324)
    _check_paths(records)


def test_aigciqa2023_quotes_models_and_targets(tmp_path):
    require_samples()
    build_preset("aigciqa2023", tmp_path)
    records = load_dataset("aigciqa2023", tmp_path).usable()
    assert len(records) == 30
    first = records[0]
    assert first.name == "Controlnet/041-2.png" and first.generator == "Controlnet"
    assert first.prompt == "A photo of an astronaut riding a horse in the forest."
    assert first.target == pytest.approx(2.8619934729853407)  # mosz1 = quality
    assert first.image == (tmp_path / "AIGCIQA2023" / "Controlnet" / "041-2.png").absolute()
    by_name = {r.name: r for r in records}
    assert by_name["DALLE/001-1.png"].prompt == "a girl"
    assert by_name["Lafite/066-3.png"].prompt == "the word 'START'"
    # exactly one wrapping pair is removed; inner quotes stay
    assert by_name["Glide/065-1.png"].prompt == (
        'Two cups of coffee, one with latte art of the words "LOVE" written in one. '
        'The other has latte art of the words "PEACE" written in the other.')
    assert by_name["stable-diffusion/014-3.png"].generator == "stable-diffusion"
    auth = load_dataset("aigciqa2023", tmp_path, target="authenticity").usable()[0]
    corr = load_dataset("aigciqa2023", tmp_path, target="correspondence").usable()[0]
    assert auth.target == pytest.approx(2.6658109948757507)
    assert corr.target == pytest.approx(2.997434319704819)
    _check_paths(records)


def test_aigcqa30k_headerless_train_keeps_the_first_row(tmp_path):
    samples = require_samples()
    build_preset("aigcqa30k", tmp_path, files=["info_train.csv"])
    lines = (samples / "AIGCQA-30K-Image" / "info_train.csv").read_text(encoding="utf-8").splitlines()
    records = load_dataset("aigcqa30k", tmp_path, subset="train").usable()
    assert len(records) == len(lines) == 30
    first = records[0]
    assert first.name == "DALLE3_0449.png" and first.row == 1 and first.generator == "DALLE3"
    assert first.target == pytest.approx(4.4312953785)
    assert first.image == (tmp_path / "AIGCQA-30K-Image" / "train" / "DALLE3_0449.png").absolute()
    by_name = {r.name: r for r in records}
    assert by_name["SSD1B_0719.png"].prompt == "someone else's lost 1980s holiday photos, kodak 110"
    assert by_name["LCM_SD1.5_0615.png"].generator == "LCM"  # up to the first "_"
    assert records[-1].row == 30
    _check_paths(records)


def test_aigcqa30k_val_and_test_have_no_scores(tmp_path):
    require_samples()
    folder = build_preset("aigcqa30k", tmp_path, files=["info_val.csv"])
    val = load_dataset("aigcqa30k", tmp_path, subset="val").usable()
    assert len(val) == 12 and all(r.target is None for r in val)
    assert val[0].name == "DALLE3_0269.png" and val[0].row == 1
    assert val[0].image.parent == (folder / "val").absolute()
    shutil.copyfile(folder / "info_val.csv", folder / "info_test.csv")
    for rec in val:
        write_image(folder / "test" / rec.name)
    test = load_dataset("aigcqa30k", tmp_path, subset="test").usable()
    assert [r.name for r in test] == [r.name for r in val]
    assert test[0].image.parent == (folder / "test").absolute()
    _check_paths(val + test)


def test_aigcqa30k_spreadsheet_with_header(tmp_path):
    samples = require_samples()
    build_preset("aigcqa30k", tmp_path, files=["info_train.xlsx"])
    sheet = xlsx_rows(samples / "AIGCQA-30K-Image" / "info_train.xlsx")
    records = load_dataset("aigcqa30k", tmp_path, subset="train").usable()
    assert len(records) == len(sheet) - 1 == 20
    assert records[0].name == "DALLE2_0000.png" and records[0].row == 2
    assert records[0].target == pytest.approx(3.6638868235)
    assert records[0].prompt.startswith("A cyberpunk gopnik on the street")
    _check_paths(records)


def test_aigcqa30k_csv_with_a_header_line_is_detected(tmp_path):
    require_samples()
    folder = build_preset("aigcqa30k", tmp_path, files=["info_train.csv"])
    path = folder / "info_train.csv"
    body = path.read_text(encoding="utf-8")
    path.write_text("name,prompt,mos\n" + body, encoding="utf-8")
    records = load_dataset("aigcqa30k", tmp_path).usable()
    assert len(records) == 30 and records[0].name == "DALLE3_0449.png" and records[0].row == 2


def test_long_prompts_and_awkward_text_survive(tmp_path):
    folder = tmp_path / "AIGCQA-30K-Image"
    long_prompt = ", ".join(f"detail number {i}" for i in range(120))
    assert len(long_prompt) > 1000
    rows = [("SDXL_0001.png", long_prompt, "3.5"), ("SDXL_0002.png", "NA", "2"), ("SDXL_0003.png", "null", "1"),
            ("SDXL_0004.png", "it's \"quoted\", isn't it", "4")]
    text = "".join('{},"{}",{}\n'.format(n, p.replace('"', '""'), s) for n, p, s in rows)
    (folder / "train").mkdir(parents=True)
    (folder / "info_train.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # UTF-8 with BOM
    records = load_dataset("aigcqa30k", tmp_path).usable()
    assert [r.prompt for r in records] == [p for _, p, _ in rows]
    assert records[0].name == "SDXL_0001.png"  # the BOM is not part of the name


# ----------------------------------------------------------------------------- custom

def test_custom_csv_relative_and_absolute_paths(tmp_path):
    images = tmp_path / "imgs"
    write_image(images / "sub" / "a_1.png")
    elsewhere = write_image(tmp_path / "other" / "b.png")
    (tmp_path / "labels.csv").write_text(
        f"file,text,score,extra\nsub/a_1.png,\"a cat, sitting\",3.25,x\n{elsewhere},a dog,1,y\n", encoding="utf-8")
    records = load_custom(tmp_path / "labels.csv", images, image_col="file", prompt_col="text", target_col="score").usable()
    assert [r.image for r in records] == [(images / "sub" / "a_1.png").absolute(), elsewhere.absolute()]
    assert [r.prompt for r in records] == ["a cat, sitting", "a dog"]
    assert [r.target for r in records] == [3.25, 1.0]
    assert [r.generator for r in records] == ["a", None]
    assert [r.row for r in records] == [2, 3]


def test_custom_target_optional(tmp_path):
    write_image(tmp_path / "a.png")
    (tmp_path / "l.csv").write_text("image,prompt\na.png,hello\n", encoding="utf-8")
    assert load_custom(tmp_path / "l.csv", tmp_path, require_target=False).usable()[0].target is None
    err = _usable_error(load_custom, tmp_path / "l.csv", tmp_path)
    assert "'mos'" in str(err) and "'image'" in str(err) and "'prompt'" in str(err)


def test_custom_xlsx(tmp_path):
    import openpyxl

    wb = openpyxl.Workbook()
    wb.active.append(["image", "prompt", "mos"])
    wb.active.append(["a.png", "a red fox", 4.5])
    wb.active.append(["b.png", "NA", 2])
    wb.save(tmp_path / "l.xlsx")
    records = load_custom(tmp_path / "l.xlsx", tmp_path).usable()
    assert [(r.name, r.prompt, r.target, r.row) for r in records] == [("a.png", "a red fox", 4.5, 2),
                                                                      ("b.png", "NA", 2.0, 3)]


# ----------------------------------------------------------------------------- missing files

def test_missing_dataset_folder_names_path_and_url(tmp_path):
    err = _usable_error(load_dataset, "agiqa3k", tmp_path)
    assert str(tmp_path / "AGIQA-3K") in str(err)
    assert "https://github.com/lcysyzxdxc/AGIQA-3k-Database" in str(err)


def test_missing_annotation_file_names_path_and_url(tmp_path):
    (tmp_path / "AIGCQA-30K-Image").mkdir()
    err = _usable_error(load_dataset, "aigcqa30k", tmp_path, subset="val")
    assert str(tmp_path / "AIGCQA-30K-Image" / "info_val.csv") in str(err)
    assert "info_val.xlsx" in str(err) and "modelscope" in str(err)


def test_unknown_preset_subset_target(tmp_path):
    assert "agiqa3k" in str(_usable_error(load_dataset, "koniq", tmp_path))
    require_samples()
    build_preset("aigcqa30k", tmp_path, files=["info_train.csv"], images=False)
    assert "train, val, test" in str(_usable_error(load_dataset, "aigcqa30k", tmp_path, subset="all"))
    assert "quality" in str(_usable_error(load_dataset, "aigcqa30k", tmp_path, target="alignment"))


# ----------------------------------------------------------------------------- bad annotation input

def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_column_names_it_and_lists_the_found_ones(tmp_path):
    require_samples()
    folder = build_preset("agiqa3k", tmp_path, images=False)
    path = folder / "data.csv"
    path.write_text(path.read_text().replace("mos_quality", "mos_q"), encoding="utf-8")
    message = str(_usable_error(load_dataset, "agiqa3k", tmp_path))
    assert str(path) in message and "row 1" in message
    assert "'mos_quality'" in message and "'mos_q'" in message and "'std_align'" in message


def test_non_numeric_score_names_file_and_row(tmp_path):
    path = _write(tmp_path / "l.csv", "image,prompt,mos\na.png,x,1\nb.png,y,high\n")
    err = _usable_error(load_custom, path, tmp_path)
    assert str(path) in str(err) and "row 3" in str(err) and "'high'" in str(err)
    assert err.kind == "bad-score" and err.row == 3


def test_nan_score_names_file_and_row(tmp_path):
    path = _write(tmp_path / "l.csv", "image,prompt,mos\na.png,x,1\nb.png,y,2\nc.png,z,NaN\n")
    err = _usable_error(load_custom, path, tmp_path)
    assert str(path) in str(err) and "row 4" in str(err) and "NaN" in str(err)


def test_empty_score_in_headerless_file(tmp_path):
    folder = tmp_path / "AIGCQA-30K-Image"
    folder.mkdir()
    _write(folder / "info_train.csv", "A_1.png,a cat,3\nA_2.png,a dog,\n")
    err = _usable_error(load_dataset, "aigcqa30k", tmp_path)
    assert str(folder / "info_train.csv") in str(err) and "row 2" in str(err) and "empty score" in str(err)


def test_empty_prompt_names_file_and_row(tmp_path):
    require_samples()
    folder = build_preset("aigciqa2023", tmp_path, images=False)
    path = folder / "all_set.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ',""""""'  # the quoted-quotes form of an empty prompt
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    err = _usable_error(load_dataset, "aigciqa2023", tmp_path)
    assert str(path) in str(err) and "row 6" in str(err) and "empty prompt" in str(err)


def test_duplicate_image_is_a_warning_with_both_rows_and_each_policy(tmp_path):
    path = _write(tmp_path / "l.csv", "image,prompt,mos\na.png,x,1\nb.png,y,2\n./a.png,z,4\n")
    found = load_custom(path, tmp_path)
    assert not found.problems and found.rows == 3
    assert [r.target for r in found.records] == [1.0, 2.0, 4.0]  # kept as published
    (warning,) = found.warnings
    assert warning.kind == "duplicate" and warning.row == 2 and "\n" not in warning.message
    for text in (str(path), "rows 2 (score 1) and 4 (score 4)", "the prompts differ", "--duplicates"):
        assert text in warning.message
    first = load_custom(path, tmp_path, duplicates="first")
    assert [(r.name, r.target) for r in first.records] == [("a.png", 1.0), ("b.png", 2.0)]
    mean = load_custom(path, tmp_path, duplicates="mean")
    assert [(r.name, r.row, r.target) for r in mean.records] == [("a.png", 2, 2.5), ("b.png", 3, 2.0)]
    assert len(first.warnings) == len(mean.warnings) == 1
    assert load_custom(path, tmp_path).usable() == found.records  # a warning does not stop a reader
    assert "first, mean" in str(_error(load_custom, path, tmp_path, duplicates="last"))


def test_every_bad_row_is_collected_and_the_good_rows_kept(tmp_path):
    path = _write(tmp_path / "l.csv", "image,prompt,mos\na.png,x,1\n,y,2\nc.png,,3\nd.png,z,abc\n"
                                      "e.png,w,nan\nf.png,,\ng.png,v,2.5\n")
    found = load_custom(path, tmp_path)
    assert [r.name for r in found.records] == ["a.png", "g.png"] and found.rows == 7
    assert [(p.row, p.kind) for p in found.problems] == [
        (3, "empty-name"), (4, "empty-prompt"), (5, "bad-score"), (6, "bad-score"), (7, "empty-prompt"),
        (7, "bad-score")]
    assert all(str(path) in p.message and f"row {p.row}" in p.message for p in found.problems)
    err = _usable_error(load_custom, path, tmp_path)  # the strict reader names the first and counts the rest
    assert err.row == 3 and "and 5 more problem(s)" in str(err) and "ipce check-data" in str(err)


def test_row_numbers_count_quoted_newlines_and_blank_lines(tmp_path):
    path = _write(tmp_path / "l.csv", 'image,prompt,mos\na.png,"two\nlines",1\n\nb.png,y,bad\n')
    assert "row 5" in str(_usable_error(load_custom, path, tmp_path))


def test_non_utf8_csv_names_file_and_row(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes("image,prompt,mos\na.png,cafe,1\nb.png,caf\u00e9 au lait,2\n".encode("latin-1"))
    err = _usable_error(load_custom, path, tmp_path)
    assert str(path) in str(err) and "row 3" in str(err) and "UTF-8" in str(err)
    assert err.kind == "encoding"


def test_non_utf8_headerless_preset(tmp_path):
    folder = tmp_path / "AIGCQA-30K-Image"
    folder.mkdir()
    (folder / "info_val.csv").write_bytes("A_1.png,na\u00efve art\n".encode("latin-1"))
    err = _usable_error(load_dataset, "aigcqa30k", tmp_path, subset="val")
    assert str(folder / "info_val.csv") in str(err) and "row 1" in str(err)


def test_ragged_csv_names_the_line(tmp_path):
    path = _write(tmp_path / "l.csv", "image,prompt,mos\na.png,x,1\nb.png,y,2,extra,more\n")
    err = _usable_error(load_custom, path, tmp_path)
    assert str(path) in str(err) and "row 3" in str(err)


def test_bad_score_in_spreadsheet_names_the_sheet_row(tmp_path):
    import openpyxl

    wb = openpyxl.Workbook()
    for row in (["image", "prompt", "mos"], ["a.png", "p", 1], [], ["b.png", "q", "n/a"]):
        wb.active.append(row)
    wb.save(tmp_path / "l.xlsx")
    err = _usable_error(load_custom, tmp_path / "l.xlsx", tmp_path)
    assert str(tmp_path / "l.xlsx") in str(err) and "row 4" in str(err)


def test_missing_custom_files(tmp_path):
    assert str(tmp_path / "none.csv") in str(_usable_error(load_custom, tmp_path / "none.csv", tmp_path))
    _write(tmp_path / "l.csv", "image,prompt,mos\n")
    assert str(tmp_path / "nodir") in str(_usable_error(load_custom, tmp_path / "l.csv", tmp_path / "nodir"))


def test_records_are_immutable_values():
    rec = Record(image=Path("/x/a.png"), prompt="p", target=1.0, name="a.png")
    assert rec.generator is None and rec.row is None and rec.source is None
    with pytest.raises(Exception):
        rec.prompt = "q"  # type: ignore[misc]
    assert os.fspath(rec.image) == "/x/a.png"
