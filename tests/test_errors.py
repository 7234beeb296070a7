"""DataError carries its kind, path and row from construction, on one line."""
from __future__ import annotations

import pickle
from pathlib import Path

from ipce.datasets.problems import Problem
from ipce.errors import DataError, IpceError


def test_fields_are_set_at_construction_and_the_message_is_one_line():
    err = DataError("a.csv, row 3:\n  score  'x'\tis not a number", kind="bad-score", path=Path("a.csv"), row=3)
    assert isinstance(err, IpceError)
    assert str(err) == err.message == "a.csv, row 3: score 'x' is not a number"
    assert (err.kind, err.path, err.row) == ("bad-score", "a.csv", 3)
    plain = DataError("no scores")
    assert (plain.kind, plain.path, plain.row, plain.details) == ("data", None, None, ())


def test_details_are_lines_under_the_message():
    err = DataError("2 bad records:", details=["a.png: empty", "b.png, row 4: bad  score"])
    assert str(err) == "2 bad records:\n  a.png: empty\n  b.png, row 4: bad  score"


def test_a_problem_is_read_off_the_error():
    err = DataError("a.csv, row 2: empty score", kind="bad-score", path="a.csv", row=2)
    assert Problem.of(err) == Problem("a.csv", 2, "bad-score", "a.csv, row 2: empty score")


def test_it_pickles_with_its_fields():
    err = DataError("x:", kind="missing", path=Path("/d/x.png"), row=None, details=["one", "two"])
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is DataError and str(back) == str(err) and back.args == err.args
    assert (back.kind, back.path, back.row, back.details) == ("missing", "/d/x.png", None, ("one", "two"))
