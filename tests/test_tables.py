"""Annotation tables parsed once: cells as text, row numbers that count the header and quoted newlines."""
from __future__ import annotations

import pytest

from ipce.datasets.tables import read_table
from ipce.errors import DataError


def test_row_numbers_count_the_header_blank_lines_and_quoted_newlines(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('name,prompt,mos\n\na.png,"two\nlines",1.5\n   \nb.png,NA,null\n', encoding="utf-8")
    rows, numbers = read_table(path)
    assert rows == [["name", "prompt", "mos"], ["a.png", "two\nlines", "1.5"], ["b.png", "NA", "null"]]
    assert numbers == [1, 3, 6]


def test_a_short_row_is_padded_and_a_long_row_is_named(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("name,prompt,mos\na.png,a cat\n,,\n", encoding="utf-8")
    rows, _ = read_table(path)
    assert rows[1:] == [["a.png", "a cat", ""]]  # an all-empty row is blank
    path.write_text("name,prompt,mos\na.png,a cat,1\nb.png,a, dog,2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"a\.csv, row 3: cannot parse the CSV \(expected 3 fields, saw 4\)") as err:
        read_table(path)
    assert err.value.row == 3


def test_a_bom_is_dropped_and_latin1_is_named_by_row(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes("\ufeffname,prompt\na.png,caf\u00e9\n".encode("utf-8"))
    assert read_table(path)[0][0] == ["name", "prompt"]
    path.write_bytes("name,prompt\na.png,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"row 2: not UTF-8 text"):
        read_table(path)


def test_a_spreadsheet_gives_the_sheets_row_numbers(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["name", "prompt"])
    sheet.append([None, None])
    sheet.append(["a.png", "a cat"])
    path = tmp_path / "a.xlsx"
    book.save(path)
    assert read_table(path) == ([["name", "prompt"], ["a.png", "a cat"]], [1, 3])
