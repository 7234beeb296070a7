"""Messages that point the right way, and refusals that come before torch and the model load."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ipce.cli import main
from tests.conftest import random_image

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys
from ipce.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


@pytest.mark.parametrize("argv, words", [
    (["score", "nope.png", "--prompt", "a cat", "--checkpoint", "tiny"], "nope.png: no such image file"),
    (["score", "{img}", "--prompt", "a cat", "--checkpoint", "gone.safetensors"], "gone.safetensors: no such checkpoint"),
    (["score", "{img}", "--prompt", " ", "--checkpoint", "tiny"], "--prompt: empty"),
    (["explain", "nope.png", "--prompt", "a cat", "--checkpoint", "tiny", "--out", "maps"], "no such image file"),
    (["rank", "--images", "nowhere", "--prompt", "a cat", "--checkpoint", "tiny"], "nowhere: images folder not found"),
    (["predict", "--images", "nowhere", "--prompt", "a cat", "--checkpoint", "tiny", "--out", "p.csv"],
     "nowhere: images folder not found"),
])
def test_a_mistake_is_refused_before_torch_is_imported(tmp_path, argv, words):
    image = tmp_path / "a.png"
    random_image(32, 32).save(image)
    argv = [a.replace("{img}", str(image)) for a in argv]
    out = subprocess.run([sys.executable, "-c", CHILD, *argv], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"code": 1, "torch": False}, out.stderr
    assert words in out.stderr and out.stderr.count("\n") == 1


def test_a_mistyped_flag_is_answered_by_the_subcommand_with_the_nearest_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["score", "a.png", "--promt", "a cat", "--checkpoint", "tiny"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ipce score ")
    assert "ipce score: error: unrecognized arguments: --promt a cat (did you mean --prompt?)" in err


def test_rank_prompts_with_a_wrong_column_names_the_columns_rank_reads(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    random_image(32, 32).save(folder / "a.png")
    prompts = tmp_path / "prompts.csv"
    with prompts.open("w", newline="") as f:
        csv.writer(f).writerows([("file", "prompt"), ("a.png", "a cat")])
    assert main(["rank", "--images", str(folder), "--prompts", str(prompts), "--checkpoint", "tiny",
                 "--out", str(tmp_path / "r.csv"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "missing column 'image'" in err and "name the columns of --prompts image and prompt" in err
    assert "--*-col" not in err


def test_reproduce_with_no_dataset_found_is_an_error(tmp_path, capsys):
    assert main(["reproduce", "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "r"),
                 "--estimate-only"]) == 1
    err = capsys.readouterr().err
    assert "ipce: error: none of the" in err and "rows can run" in err
