"""The files a streaming `ipce predict` keeps: appended CSVs, torn tails, part files, the settings."""
import csv
import io

import pytest

from ipce.engine.parts import PartStore, blocks_left, differing_setting, file_identity
from ipce.utils.io import write_csv
from ipce.utils.stream import CsvAppender, cut_torn_tail, one_line, stream_csv


@pytest.mark.parametrize("text, kept", [
    ("a,b\n1,2\n3,", "a,b\n1,2\n"),      # a torn row goes
    ("a,b\n1,2\n", "a,b\n1,2\n"),        # a whole file stays
    ("a,b", ""),                          # a torn header: nothing is left
    ("", ""),
])
def test_a_torn_last_line_is_cut(tmp_path, text, kept):
    path = tmp_path / "p.csv"
    path.write_bytes(text.encode())
    assert cut_torn_tail(path) == len(text) - len(kept)
    assert path.read_bytes() == kept.encode()


def test_a_torn_line_longer_than_the_read_block_is_cut(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"x\n" + b"y" * 200_000)
    cut_torn_tail(path)
    assert path.read_bytes() == b"x\n"


def test_appended_rows_are_on_disk_before_close_and_a_reopened_file_gets_no_second_header(tmp_path):
    path = tmp_path / "a.csv"
    with CsvAppender(path, ["index", "problem"]) as writer:
        writer.write_rows([[0, ""], [1, 'bad, "quoted"']])
        with open(path, newline="", encoding="utf-8") as f:  # another reader, while the writer is open
            assert list(csv.reader(f)) == [["index", "problem"], ["0", ""], ["1", 'bad, "quoted"']]
    with CsvAppender(path, ["index", "problem"]) as writer:
        writer.write_rows([[2, ""]])
    with open(path, newline="", encoding="utf-8") as f:
        assert [row[0] for row in csv.reader(f)] == ["index", "0", "1", "2"]


def test_stream_csv_writes_the_bytes_of_write_csv(tmp_path):
    rows = [["a.png", 'a "quoted", prompt', "1.0000000"], ["ß.png", "naïve\ttab", ""]]
    write_csv(tmp_path / "one.csv", ["image", "prompt", "score"], rows)
    stream_csv(tmp_path / "two.csv", ["image", "prompt", "score"], iter(rows))
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()
    assert one_line("a\nb\r\nc") == "a b c"


def write_part(path, rows, torn=""):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([["index", "problem", "score", "score_1"], *rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue() + torn, encoding="utf-8")


def test_part_files_give_the_blocks_left_and_merge_in_order_with_each_record_once(tmp_path):
    store = PartStore(tmp_path / "out.csv")
    # 9 records in blocks of 2 (0-1, 2-3, 4-5, 6-7, 8): two ranks of attempt 0 stopped; rank 0 had
    # blocks 0 and 2 and half of 4 (record 8 of block 4 is missing: its only row torn)
    write_part(store.folder / "a000-r000.csv", [[0, "", "1.5", "1.5"], [1, "", "2.5", "2.5"],
                                                [4, "", "3.0", "3.0"], [5, "bad file", "", ""]], torn="8,,4.")
    write_part(store.folder / "a000-r001.csv", [[2, "", "0.5", "0.5"]])  # block 1 torn after one row
    found = store.scan(9)
    assert found.attempt == 1 and found.already == 5
    assert (store.folder / "a000-r000.csv").read_text().endswith("5,bad file,,\n")  # the torn row cut
    left = blocks_left(found.done, 2)
    assert left == [1, 3, 4]
    # the resumed attempt scores every block left, block 1 again in full
    write_part(store.folder / "a001-r000.csv", [[2, "", "0.5", "0.5"], [3, "", "0.25", "0.25"],
                                                [8, "", "4.5", "4.5"]])
    write_part(store.folder / "a001-r001.csv", [[6, "", "1.0", "1.0"], [7, "", "2.0", "2.0"]])
    merged = list(store.merged())
    assert [i for i, _, _ in merged] == list(range(9))
    assert merged[5] == (5, "bad file", ["", ""]) and merged[3] == (3, "", ["0.25", "0.25"])
    assert blocks_left(store.scan(9).done, 2) == []


def test_settings_name_the_first_difference_and_a_moved_checkpoint_is_the_same(tmp_path):
    ckpt = tmp_path / "m.bin"
    ckpt.write_bytes(b"weights" * 100)
    saved = {"checkpoint": [file_identity(ckpt)], "resize": [512], "patches": [15], "precision": "fp32"}
    moved = tmp_path / "elsewhere.bin"
    ckpt.rename(moved)
    now = {**saved, "checkpoint": [file_identity(moved)]}
    assert differing_setting(saved, now) is None
    moved.write_bytes(b"other weights" * 100)
    line = differing_setting(saved, {**saved, "checkpoint": [file_identity(moved)]})
    assert line.startswith("--checkpoint differs") and "m.bin" in line and "elsewhere.bin" in line
    assert differing_setting(saved, {**saved, "resize": [768]}).startswith("--resize differs: the output was "
                                                                             "made with 512, this run has 768")
