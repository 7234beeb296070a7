"""AIGCIQA2023 read from the publisher's files (.mat + pic-index.xlsx + prompts) equals all_set.csv.

The spreadsheets and all_set.csv are the published ones (tests/data/published.tar.xz). The
tarball has no .mat files, so they are written here from all_set.csv, matched image by image
on (model, image_name): the records can only agree if the reader maps MOS values to images by
pic-index's row order and image names to prompts by their three digits.
"""
from __future__ import annotations

import csv
import math
import shutil
import tarfile
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from scipy.io import savemat

from ipce.datasets.aigciqa2023 import find_publisher_files, missing_message, publisher_items
from ipce.datasets.sources import load_dataset
from ipce.errors import DataError

TARBALL = Path(__file__).resolve().parent / "data" / "published.tar.xz"
PUBLISHER = "https://github.com/wangjiarui153/AIGCIQA2023"
WINNERS = "https://github.com/pf0607/IPCE"
TARGETS = {"quality": "mosz1", "authenticity": "mosz2", "correspondence": "mosz3"}


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """The published AIGCIQA2023 folder (all_set.csv and both spreadsheets)."""
    root = tmp_path_factory.mktemp("published")
    with tarfile.open(TARBALL) as tar:
        tar.extractall(root, filter="data")
    return root / "published" / "AIGCIQA2023"


@pytest.fixture(scope="module")
def pic_index(published) -> list[tuple[str, str]]:
    """(model, image_name) of each pic-index.xlsx row, read with openpyxl."""
    sheet = openpyxl.load_workbook(published / "pic-index.xlsx", read_only=True).worksheets[0]
    return [(str(model), str(name)) for model, name in sheet.iter_rows(values_only=True)]


@pytest.fixture(scope="module")
def mos(published, pic_index) -> dict[str, np.ndarray]:
    """column -> the publisher's 2400 x 1 vector: all_set.csv's value of the same image x 20."""
    with (published / "all_set.csv").open(newline="", encoding="utf-8") as handle:
        by_image = {(r["model"], r["image_name"]): r for r in csv.DictReader(handle)}
    return {column: np.array([[float(by_image[key][column]) * 20] for key in pic_index])
            for column in TARGETS.values()}


def _write_mats(folder: Path, mos: dict, **replace) -> None:
    """DATA/MOS/<column>.mat; `replace` maps a column to the dict to save instead (None: no file)."""
    (folder / "DATA" / "MOS").mkdir(parents=True, exist_ok=True)
    for column, vector in mos.items():
        content = replace.get(column, {"MOSz": vector})
        if content is not None:
            savemat(folder / "DATA" / "MOS" / f"{column}.mat", content)


def _publisher_root(tmp_path: Path, published: Path, mos: dict, xlsx_dir: str = "", **replace) -> Path:
    """<root>/AIGCIQA2023 holding only the publisher's files; xlsx_dir "" (top level) or "DATA"."""
    folder = tmp_path / "pub" / "AIGCIQA2023"
    _write_mats(folder, mos, **replace)
    for name in ("pic-index.xlsx", "AIGCIQA2023_Prompts.xlsx"):
        (folder / xlsx_dir).mkdir(parents=True, exist_ok=True)
        shutil.copy(published / name, folder / xlsx_dir / name)
    return folder.parent


def _all_set_records(root: Path, published: Path, target: str = "quality"):
    """all_set.csv's records, read from the same folder (all_set.csv is preferred when both are there)."""
    shutil.copy(published / "all_set.csv", root / "AIGCIQA2023" / "all_set.csv")
    records = load_dataset("aigciqa2023", root, target=target).usable()
    assert {r.source.name for r in records} == {"all_set.csv"}
    return records


def _assert_same_records(ours, theirs) -> None:
    assert len(ours) == len(theirs) == 2400
    theirs = {r.name: r for r in theirs}
    assert len(theirs) == 2400 and {r.name for r in ours} == set(theirs)
    for rec in ours:
        other = theirs[rec.name]
        assert (rec.image, rec.prompt, rec.generator) == (other.image, other.prompt, other.generator), rec.name
        assert abs(rec.target - other.target) <= 1e-12, rec.name


def _error(func, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as caught:
        func(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and message.strip() == message
    return caught.value


def _usable_error(load, *args, **kwargs) -> DataError:
    """The error of `load(...).usable()`: the reader's, or the first bad row's with the count of the rest."""
    return _error(lambda: load(*args, **kwargs).usable())


@pytest.mark.parametrize("xlsx_dir", ["", "DATA"])
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_publisher_files_give_the_all_set_records(tmp_path, published, mos, xlsx_dir, target):
    root = _publisher_root(tmp_path, published, mos, xlsx_dir)
    ours = load_dataset("aigciqa2023", root, target=target).usable()
    assert {r.source.name for r in ours} == {"pic-index.xlsx"}
    _assert_same_records(ours, _all_set_records(root, published, target))


def test_rows_names_generators_and_scale(tmp_path, published, mos, pic_index):
    root = _publisher_root(tmp_path, published, mos)
    folder = root / "AIGCIQA2023"
    records = load_dataset("aigciqa2023", root).usable()
    assert [r.row for r in records] == list(range(1, 2401))  # the sheet's rows, no header
    assert [r.name for r in records] == [f"{model}/{name}" for model, name in pic_index]
    assert [r.generator for r in records] == [model for model, _ in pic_index]
    assert {r.source for r in records} == {folder / "pic-index.xlsx"}
    first = records[0]
    assert first.name == "Controlnet/000-1.png" and first.prompt == "a corgi"
    assert first.image == (folder / "Controlnet" / "000-1.png").absolute()
    assert first.target * 20 == pytest.approx(60.164, abs=5e-4) and first.target == pytest.approx(3.0082, abs=5e-5)
    by_name = {r.name: r for r in records}
    assert by_name["DALLE/001-1.png"].prompt == "a girl"  # 001 = the second prompt row
    assert by_name["Unidiffuser/099-4.png"].prompt == "An aerial view of Ha Long Bay without any boats"
    assert sorted({r.generator for r in records}) == sorted(
        ["Controlnet", "DALLE", "Glide", "Lafite", "stable-diffusion", "Unidiffuser"])


def test_publisher_items_one_per_image(tmp_path, published, mos, pic_index):
    folder = _publisher_root(tmp_path, published, mos, "DATA") / "AIGCIQA2023"
    source, items = publisher_items(folder, "mosz3")
    assert source == folder / "DATA" / "pic-index.xlsx"
    assert len(items) == 2400
    row, name, prompt, target, generator = items[41]
    assert (row, name, generator) == (42, f"{pic_index[41][0]}/{pic_index[41][1]}", pic_index[41][0])
    assert isinstance(target, float) and target == pytest.approx(mos["mosz3"][41, 0] / 20, abs=1e-12)
    sheet = openpyxl.load_workbook(folder / "DATA" / "AIGCIQA2023_Prompts.xlsx", read_only=True).worksheets[0]
    texts = [row[2] for row in sheet.iter_rows(values_only=True)]
    assert prompt == texts[int(pic_index[41][1][:3])] and not prompt.startswith('"')


@pytest.mark.parametrize("header", [["style", "object class", "prompt"], ["Style", "Object Class", "Prompt"]])
def test_prompts_file_with_a_header_row_gives_the_same_records(tmp_path, published, mos, header):
    root = _publisher_root(tmp_path, published, mos)
    prompts = root / "AIGCIQA2023" / "AIGCIQA2023_Prompts.xlsx"
    book = openpyxl.load_workbook(prompts)
    book.worksheets[0].insert_rows(1)
    for column, text in enumerate(header, start=1):
        book.worksheets[0].cell(row=1, column=column, value=text)
    book.save(prompts)
    ours = load_dataset("aigciqa2023", root).usable()
    _assert_same_records(ours, _all_set_records(root, published))
    assert ours[0].prompt == "a corgi"


def test_find_publisher_files(tmp_path, published, mos):
    assert find_publisher_files(tmp_path) is None
    top = _publisher_root(tmp_path / "a", published, mos) / "AIGCIQA2023"
    assert find_publisher_files(top) == {"mat_dir": top / "DATA" / "MOS", "pic_index": top / "pic-index.xlsx",
                                         "prompts": top / "AIGCIQA2023_Prompts.xlsx"}
    under = _publisher_root(tmp_path / "b", published, mos, "DATA") / "AIGCIQA2023"
    assert find_publisher_files(under)["pic_index"] == under / "DATA" / "pic-index.xlsx"
    assert find_publisher_files(under)["prompts"] == under / "DATA" / "AIGCIQA2023_Prompts.xlsx"


def test_missing_mat_file_names_it(tmp_path, published, mos):
    root = _publisher_root(tmp_path, published, mos, mosz2=None)
    assert len(load_dataset("aigciqa2023", root, target="quality").usable()) == 2400  # mosz1.mat is there
    err = _usable_error(load_dataset, "aigciqa2023", root, target="authenticity")
    path = root / "AIGCIQA2023" / "DATA" / "MOS" / "mosz2.mat"
    assert err.kind == "missing-file" and str(path) in str(err) and PUBLISHER in str(err)


def test_mat_without_mosz_names_the_variables_found(tmp_path, published, mos):
    root = _publisher_root(tmp_path, published, mos, mosz3={"MOS": mos["mosz3"]})
    err = _usable_error(load_dataset, "aigciqa2023", root, target="correspondence")
    assert err.kind == "missing-column"
    assert str(root / "AIGCIQA2023" / "DATA" / "MOS" / "mosz3.mat") in str(err)
    assert "'MOSz'" in str(err) and "MOS" in str(err).split("variables found:")[1] and PUBLISHER in str(err)


def test_vector_of_the_wrong_length_names_both_counts(tmp_path, published, mos):
    root = _publisher_root(tmp_path, published, mos, mosz1={"MOSz": mos["mosz1"][:-1]})
    err = _usable_error(load_dataset, "aigciqa2023", root)
    message = str(err)
    assert err.kind == "unreadable-file" and str(root / "AIGCIQA2023" / "DATA" / "MOS" / "mosz1.mat") in message
    assert "2399 values" in message and "2400 images" in message and "pic-index.xlsx" in message


def test_nan_score_names_its_index(tmp_path, published, mos):
    vector = mos["mosz1"].copy()
    vector[6, 0] = math.nan
    root = _publisher_root(tmp_path, published, mos, mosz1={"MOSz": vector})
    err = _usable_error(load_dataset, "aigciqa2023", root)
    assert err.kind == "bad-score" and err.row == 7
    assert str(root / "AIGCIQA2023" / "DATA" / "MOS" / "mosz1.mat") in str(err) and "index 7:" in str(err)


def test_image_name_without_a_prompt_row_names_the_pic_index_row(tmp_path, published, mos):
    root = _publisher_root(tmp_path, published, mos)
    index = root / "AIGCIQA2023" / "pic-index.xlsx"
    book = openpyxl.load_workbook(index)
    book.worksheets[0].cell(row=5, column=2, value="100-1.png")  # prompts are rows 000..099
    book.save(index)
    err = _usable_error(load_dataset, "aigciqa2023", root)
    assert f"{index}, row 5:" in str(err) and "'100-1.png'" in str(err) and "AIGCIQA2023_Prompts.xlsx" in str(err)
    assert err.row == 5


def test_missing_spreadsheet_names_both_places_and_the_publisher(tmp_path, published, mos):
    root = _publisher_root(tmp_path, published, mos)
    folder = root / "AIGCIQA2023"
    (folder / "AIGCIQA2023_Prompts.xlsx").unlink()
    err = _usable_error(load_dataset, "aigciqa2023", root)
    assert err.kind == "missing-file" and str(folder / "AIGCIQA2023_Prompts.xlsx") in str(err)
    assert str(folder / "DATA" / "AIGCIQA2023_Prompts.xlsx") in str(err) and PUBLISHER in str(err)


def test_missing_both_forms_names_both_sources(tmp_path):
    folder = tmp_path / "AIGCIQA2023"
    folder.mkdir()
    err = _usable_error(load_dataset, "aigciqa2023", tmp_path)
    message = str(err)
    assert err.kind == "missing-file" and message == missing_message(folder)
    assert message.startswith(f"{folder}:")
    assert "all_set.csv" in message and WINNERS in message and "data/" in message
    for name in ("mosz1.mat", "pic-index.xlsx", "AIGCIQA2023_Prompts.xlsx", PUBLISHER):
        assert name in message
    # the winners' file is credited to the winners, the publisher's files to the publisher
    assert message.index(WINNERS) < message.index("mosz1.mat") < message.index(PUBLISHER)
