"""Every code block of README.md runs as written, in a folder that holds what the blocks name
(tiny checkpoints, generated images, prompt and annotation files), unless the line before it says
`<!-- readme-test: skip: REASON -->` (a download, a GPU, a server, minutes of work)."""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import random_image, tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SKIP = re.compile(r"<!-- readme-test: skip: (.+?) -->\n$")
FENCE = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)
PROMPT = "two red circles on a blue background"


def readme_blocks() -> list[tuple[int, str, str, str | None]]:
    """(line, language, code, skip reason or None) of each bash/python block of README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        before = text[:match.start()]
        line_before = before[before.rstrip("\n").rfind("\n") + 1:]
        skip = SKIP.search(line_before)
        blocks.append((before.count("\n") + 1, match.group(1), match.group(2), skip.group(1) if skip else None))
    return blocks


BLOCKS = readme_blocks()


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A folder with every file the runnable blocks name."""
    root = tmp_path_factory.mktemp("readme")
    for name, seed in (("best", 1), ("a", 2), ("b", 3)):
        tiny_checkpoint(root / f"{name}.safetensors", seed=seed)
    for name, seed in (("a.png", 1), ("b.png", 2), ("img.png", 3)):
        random_image(96, 80, seed=seed).save(root / name)
    names = [f"SD_{i}.png" for i in range(4)]
    for folder in ("generated", "candidates", "mine"):
        (root / folder).mkdir()
        for i, name in enumerate(names):
            random_image(80 + 8 * i, 72, seed=10 + i).save(root / folder / name)
    write_csv(root / "prompts.csv", [("image", "prompt"), *((n, PROMPT if i % 2 else "a corgi on a skateboard")
                                                          for i, n in enumerate(names))])
    write_csv(root / "mine.csv", [("image", "prompt", "mos"), *((n, PROMPT, 1.5 + i) for i, n in enumerate(names))])
    return root


def test_every_block_either_runs_or_says_why_not():
    assert len(BLOCKS) > 10
    for line, _, _, reason in BLOCKS:
        assert reason is None or len(reason.split()) >= 2, f"README.md line {line}: a skip needs its reason"
    assert sum(reason is None for *_, reason in BLOCKS) >= 4  # the offline ones run


@pytest.mark.slow
@pytest.mark.parametrize("line, language, code, reason", BLOCKS, ids=[f"line{b[0]}" for b in BLOCKS])
def test_readme_block_runs_as_written(world, line, language, code, reason):
    if reason is not None:
        pytest.skip(reason)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "IPCE_PROGRESS": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=world, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"README.md line {line} failed:\n{code}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
