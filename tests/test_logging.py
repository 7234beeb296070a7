"""ipce reports through the `ipce` logger tree: the CLI shows it, a Python caller silences or routes it;
every progress bar can be switched off."""
from __future__ import annotations

import logging

import pytest

import ipce
from ipce.cli import ConsoleHandler, main
from ipce.config import make_config
from ipce.engine.train import run
from ipce.utils.progress import set_progress
from tests.conftest import random_image, tiny_checkpoint
from tests.datagen import brightness_dataset


@pytest.fixture
def no_console():
    """The `ipce` logger as a Python process that never ran the CLI has it (another test may have)."""
    logger = logging.getLogger("ipce")
    saved, level = list(logger.handlers), logger.level
    for handler in saved:
        if isinstance(handler, ConsoleHandler):
            logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    yield logger
    logger.handlers[:] = saved
    logger.setLevel(level)


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.name, record.getMessage()))


def _config(tmp_path):
    annotations, images = brightness_dataset(tmp_path / "data", n=16)
    return make_config(annotations=str(annotations), images=str(images), backbone="tiny", epochs=1, lr=1e-3,
                       resize=224, train_patches=1, eval_patches=1, batch_size=8, workers=0, splits=[1],
                       out=str(tmp_path / "run"), flip=False, progress=False)


@pytest.mark.slow
def test_training_from_python_prints_nothing_and_logs_to_the_callers_handler(tmp_path, capsys, no_console):
    collect = Collect()
    no_console.addHandler(collect)
    no_console.setLevel(logging.INFO)
    try:
        run(_config(tmp_path))
    finally:
        no_console.removeHandler(collect)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    messages = [m for _, m in collect.lines]
    assert any(m.startswith("split 1 epoch 1: loss") for m in messages), messages
    assert any("results in" in m for m in messages)
    assert {name for name, _ in collect.lines} <= {"ipce.engine.train"}


def test_the_cli_prints_what_the_engine_logs(tmp_path, capsys):
    annotations, images = brightness_dataset(tmp_path / "data", n=16)
    out = tmp_path / "run"
    assert main(["train", "--annotations", str(annotations), "--images", str(images), "--backbone", "tiny",
                 "--epochs", "1", "--resize", "224", "--train-patches", "1", "--eval-patches", "1",
                 "--batch-size", "8", "--workers", "0", "--splits", "1", "--out", str(out), "--no-flip",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "split 1 epoch 1: loss" in printed and f"results in {out}" in printed
    # a Python caller silences it by the logger's level, whatever the CLI installed
    logging.getLogger("ipce").setLevel(logging.WARNING)
    try:
        assert main(["train", "--resume", "--out", str(out)]) == 0
    finally:
        logging.getLogger("ipce").setLevel(logging.INFO)
    assert "results in" not in capsys.readouterr().out


@pytest.mark.parametrize("shown", [True, False])
def test_set_progress_switches_every_bar(tmp_path, capsys, shown):
    image = tmp_path / "gen_0.png"
    random_image(64, 64).save(image)
    scorer = ipce.load_scorer(tiny_checkpoint(tmp_path / "m.safetensors", seed=1), resize=224, patches=1)
    set_progress(shown)
    try:
        scorer.score([image], "a cat", progress=True)
    finally:
        set_progress(True)
    assert ("score:" in capsys.readouterr().err) is shown
