"""One policy for an unreadable image among good ones, through score, predict, rank, explain, the
JSON API and the page: the others are scored, every bad one is named with why, and the status says
the result is partial (exit 3; `partial: true` and `failed` in a 200 answer; the page's message).
When no image can be read, each surface answers with an error."""
import csv

import pytest

pytest.importorskip("fastapi", reason='the serve extra is not installed (pip install -e ".[serve]")')
pytest.importorskip("gradio", reason='the serve extra is not installed (pip install -e ".[serve]")')
pytest.importorskip("httpx", reason="httpx (FastAPI's TestClient) is not installed")

from fastapi.testclient import TestClient

import ipce
from ipce.cli import main
from ipce.serve.app import build_app
from ipce.serve.page import score_files
from tests.conftest import random_image, tiny_checkpoint

VIEWS = ["--resize", "224", "--patches", "2"]
PROMPT = "a red fox in the snow"
WHY = "not an image file"  # what the images module says of bad.png


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A tiny checkpoint and a folder: gen_0.png, bad.png (text, not an image), gen_1.png; and the
    reference scores of the two good ones."""
    root = tmp_path_factory.mktemp("bad")
    ckpt = tiny_checkpoint(root / "m.safetensors", seed=7)
    folder = root / "imgs"
    folder.mkdir()
    random_image(96, 64, seed=1).save(folder / "gen_0.png")
    (folder / "bad.png").write_bytes(b"this is not a picture")
    random_image(64, 96, seed=2).save(folder / "gen_1.png")
    good = [folder / "gen_0.png", folder / "gen_1.png"]
    reference = ipce.load_scorer(ckpt, resize=224, patches=2).score(good, PROMPT)
    assert abs(reference[0] - reference[1]) > 1e-4  # a mix-up would show
    return ckpt, folder, good, reference


def rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def scores_by_name(path, column="score"):
    return {r["image"].rsplit("/", 1)[-1]: float(r[column]) for r in rows(path)}


@pytest.mark.slow
def test_one_bad_image_among_good_ones_is_named_and_the_rest_scored_everywhere(case, tmp_path, capsys):
    ckpt, folder, good, reference = case
    expected = dict(zip(["gen_0.png", "gen_1.png"], reference))
    bad = folder / "bad.png"
    common = ["--checkpoint", str(ckpt), *VIEWS, "--no-progress"]

    # score
    out = tmp_path / "score.csv"
    assert main(["score", str(good[0]), str(bad), str(good[1]), "--prompt", PROMPT, "--checkpoint", str(ckpt),
                 *VIEWS, "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert f"{bad}: {WHY}" in err and "scored 2 of 3 images" in err
    assert scores_by_name(out) == pytest.approx(expected, abs=1e-5)
    assert [r["path"] for r in rows(tmp_path / "score.errors.csv")] == [str(bad)]

    # predict
    out = tmp_path / "predict.csv"
    assert main(["predict", "--images", str(folder), "--prompt", PROMPT, "--out", str(out), "--workers", "0",
                 *common]) == 3
    assert scores_by_name(out) == pytest.approx(expected, abs=1e-5)
    listed = rows(tmp_path / "predict.errors.csv")
    assert [r["path"] for r in listed] == [str(bad)] and WHY in listed[0]["problem"]

    # rank
    out = tmp_path / "rank.csv"
    assert main(["rank", "--images", str(folder), "--prompt", PROMPT, "--out", str(out), *common]) == 3
    assert scores_by_name(out) == pytest.approx(expected, abs=1e-5)
    listed = rows(tmp_path / "rank.errors.csv")
    assert [r["path"] for r in listed] == [str(bad)] and WHY in listed[0]["problem"]

    # explain
    capsys.readouterr()
    assert main(["explain", str(good[0]), str(bad), str(good[1]), "--prompt", PROMPT, "--out", str(tmp_path / "maps"),
                 *common]) == 3
    printed = capsys.readouterr()
    assert f"{bad}: {WHY}" in printed.err and "explained 2 of 3 images" in printed.out
    assert sorted(p.name for p in (tmp_path / "maps").glob("*.png")) == ["gen_0.png", "gen_1.png"]

    # the JSON API, multipart and JSON bodies
    scorer = ipce.load_scorer(ckpt, resize=224, patches=2)
    app = build_app(scorer, [str(ckpt)], max_upload_bytes=10**6, page=False)
    files = [good[0], bad, good[1]]
    with TestClient(app) as client:
        answer = client.post("/api/score", data={"prompt": PROMPT},
                             files=[("images", (p.name, p.read_bytes())) for p in files])
    app.state.batcher.close()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["partial"] is True
    assert [(f["index"], f["name"]) for f in body["failed"]] == [(1, "bad.png")] and WHY in body["failed"][0]["error"]
    assert body["scores"][1] is None
    assert [body["scores"][0], body["scores"][2]] == pytest.approx(reference, abs=1e-5)

    # the page, through the Score button's handler
    from ipce.serve.batch import Batcher

    batcher = Batcher(scorer)
    try:
        message, table, *_ = score_files(batcher, [str(p) for p in files], PROMPT)
    finally:
        batcher.close()
    assert "Scored 2 of 3 image(s)" in message and "Partial result: 1 could not be read" in message
    assert f"**Not scored:** bad.png: {WHY}" in message
    assert {name: float(score) for _, name, score in table} == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_when_no_image_can_be_read_every_surface_answers_with_an_error(case, tmp_path, capsys):
    ckpt, folder, _, _ = case
    only = tmp_path / "only"
    only.mkdir()
    bad = only / "bad.png"
    bad.write_bytes((folder / "bad.png").read_bytes())
    common = ["--checkpoint", str(ckpt), *VIEWS, "--no-progress"]
    argvs = {
        "score": ["score", str(bad), "--prompt", PROMPT, "--checkpoint", str(ckpt), *VIEWS],
        "predict": ["predict", "--images", str(only), "--prompt", PROMPT, "--out", str(tmp_path / "p.csv"),
                    "--workers", "0", *common],
        "rank": ["rank", "--images", str(only), "--prompt", PROMPT, "--out", str(tmp_path / "r.csv"), *common],
        "explain": ["explain", str(bad), "--prompt", PROMPT, "--out", str(tmp_path / "maps"), *common],
    }
    for name, argv in argvs.items():
        capsys.readouterr()
        assert main(argv) == 1, name
        assert "ipce: error: none of the 1 image(s) could be read" in capsys.readouterr().err, name

    scorer = ipce.load_scorer(ckpt, resize=224, patches=2)
    app = build_app(scorer, [str(ckpt)], max_upload_bytes=10**6, page=False)
    with TestClient(app) as client:
        answer = client.post("/api/score", data={"prompt": PROMPT},
                             files=[("images", (p.name, p.read_bytes())) for p in (bad, bad)])
    app.state.batcher.close()
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error.startswith(f"images[0] (bad.png): {WHY}") and f"; images[1] (bad.png): {WHY}" in error

    from ipce.serve.batch import Batcher

    batcher = Batcher(scorer)
    try:
        message, table, *_ = score_files(batcher, [str(bad)], PROMPT)
    finally:
        batcher.close()
    assert message.startswith("None of the 1 image(s) could be read.") and f"bad.png: {WHY}" in message
