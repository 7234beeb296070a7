"""One tool, one grammar: every subcommand describes itself, shares the flags that mean the same
thing (name, default, help), shows its defaults, and exits with the documented statuses."""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from ipce.cli import build_parser, main
from ipce.commands import flags
from ipce.commands.train import config_from_args
from ipce.config import TrainConfig
from ipce.errors import IpceError
from ipce.utils.device import resolve_device
from tests.datagen import build_custom, write_image

SUBCOMMANDS = ["score", "check-data", "splits", "train", "predict", "demo", "weights", "weights list",
               "weights fetch", "rank", "explain", "serve", "reproduce", "export"]
BUILDS_A_MODEL = {"score", "train", "predict", "demo", "rank", "explain", "serve", "reproduce"}
SHOWS_A_BAR = {"score", "check-data", "train", "predict", "demo", "weights fetch", "rank", "explain", "reproduce"}
SHARED = ("--device", "--workers", "--no-progress", "--group-by", "--n-splits", "--precision")


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{prefix}{name}"] = sub
                found.update(_subparsers(sub, f"{prefix}{name} "))
    return found


PARSERS = _subparsers(build_parser())


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return parser._get_formatter()._expand_help(action)


def test_every_subcommand_is_covered():
    assert set(PARSERS) == set(SUBCOMMANDS)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_grammar(name):
    parser = PARSERS[name]
    options = _options(parser)
    text = parser.format_help()
    assert parser.description and parser.description.strip()
    assert "default: None" not in text and "(default: False)" not in text
    shown = [a for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]
    assert [a.dest for a in shown if not (a.help or "").strip()] == []  # every flag has help
    for action in shown:  # a flag with a default shows it
        if action.option_strings and action.default not in (None, False):
            assert "default" in _help_of(parser, action), action.option_strings
    assert ("--device" in options) == (name in BUILDS_A_MODEL)
    if name in BUILDS_A_MODEL:
        device = options["--device"]
        assert device.default == "auto" or (name in ("train", "reproduce") and device.default is None)
        assert "(default: auto)" in _help_of(parser, device)
    assert ("--no-progress" in options) == (name in SHOWS_A_BAR)


def test_shared_flags_read_the_same_everywhere():
    seen: dict[str, set] = {}
    for name, parser in PARSERS.items():
        for option, action in _options(parser).items():
            if option in SHARED and action.help != argparse.SUPPRESS:
                seen.setdefault(option, set()).add(_help_of(parser, action))
    for option in ("--device", "--workers", "--no-progress", "--group-by", "--n-splits"):
        assert len(seen[option]) == 1, (option, seen[option])
    assert "--group-by" in _options(PARSERS["train"]) and "--group-by" in _options(PARSERS["splits"])
    assert _options(PARSERS["train"])["--group-by"].choices == _options(PARSERS["splits"])["--group-by"].choices \
        == ("prompt", "generator")


def test_every_training_setting_is_a_train_flag():
    dests = {action.dest for action in PARSERS["train"]._actions}
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"preset", "dataset", "progress"}
    assert fields - dests == set()
    assert "no_progress" in dests  # --no-progress is the config's `progress`


def test_train_flags_reach_the_config():
    args = build_parser().parse_args(["train", "--t-max", "7", "--ratio", "0.7", "--eval-batch-size", "5",
                                      "--group-by", "generator", "--no-progress", "--holdout-ratios", "0.6", "0.2",
                                      "0.2"])
    config = config_from_args(args)
    assert (config.t_max, config.ratio, config.eval_batch_size, config.group_by) == (7, 0.7, 5, "generator")
    assert config.progress is False and list(config.holdout_ratios) == [0.6, 0.2, 0.2]
    plain = config_from_args(build_parser().parse_args(["train"]))
    assert plain.device == "auto" and plain.progress is True


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == (f"ipce {version('ipce')} (torch {version('torch')}, "
                                               f"open_clip {version('open_clip_torch')})")


def test_bare_ipce_prints_the_help_and_exits_0(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ipce")
    assert all(name in out for name in ("score", "check-data", "splits", "train", "predict", "demo", "weights"))
    assert "exit status:" in out and all(f"  {code}  " in out for code in (0, 1, 2, 3))


def test_the_command_leaves_what_is_alive_out_of_the_collections_at_exit():
    """gc.freeze at exit: the last garbage collections over torch's and open_clip's objects took ~2 s."""
    code = ("import atexit, gc; atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0)); "
            "from ipce.cli import main; main([]); main([]); assert gc.get_freeze_count() == 0")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "frozen True"  # after main's hook ran (hooks run last-in first-out)


@pytest.mark.parametrize("argv", [["train"], ["check-data"], ["predict", "--checkpoint", "tiny"],
                                  ["splits", "--out", "{tmp}/splits"]])
def test_unknown_preset_is_one_line_and_exit_1(argv, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = main([*argv, "--preset", "agiqa4k", *(["--out", str(tmp_path / "run")] if argv[0] == "train" else [])])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("ipce: error: --preset agiqa4k") and "agiqa1k" in err


def test_train_preset_names_stay_in_its_help():
    help_text = _help_of(PARSERS["train"], _options(PARSERS["train"])["--preset"])
    assert all(name in help_text for name in ("agiqa1k", "agiqa3k", "aigciqa2023", "aigcqa30k"))




def test_predict_with_an_unreadable_image_exits_3(tmp_path, capsys):
    folder = tmp_path / "imgs"
    write_image(folder / "a_good.png", size=(64, 64), seed=1)
    (folder / "b_empty.png").write_bytes(b"")
    out = tmp_path / "scores.csv"
    code = main(["predict", "--checkpoint", "tiny", "--images", str(folder), "--prompt", "a cat", "--out", str(out),
                 "--resize", "224", "--patches", "1", "--workers", "0", "--device", "cpu", "--no-progress"])
    assert code == flags.EXIT_PARTIAL == 3
    with out.open(newline="") as f:
        assert [row["image"] for row in csv.DictReader(f)] == ["a_good.png"]
    assert "b_empty.png" in (tmp_path / "scores.errors.csv").read_text()
    assert "skipped 1 unreadable" in capsys.readouterr().out


@pytest.mark.parametrize("quiet", [False, True])
def test_no_progress_silences_the_bar(tmp_path, capsys, quiet):
    annotations, images = build_custom(tmp_path, n=3)
    code = main(["check-data", "--annotations", str(annotations), "--images", str(images), "--workers", "0",
                 *(["--no-progress"] if quiet else [])])
    assert code == 0
    assert ("checking images" in capsys.readouterr().err) is not quiet


def test_device_grammar():
    assert resolve_device("auto") in ("cpu", "cuda") and resolve_device(None) == resolve_device("auto")
    assert resolve_device("CPU") == "cpu"
    for bad in ("gpu", "cuda:x", "mps0"):
        with pytest.raises(IpceError, match="auto, cpu, cuda or cuda:N"):
            resolve_device(bad)


def test_bad_device_is_one_line_and_exit_1(tmp_path, capsys):
    image = write_image(tmp_path / "a.png", size=(64, 64), seed=0)
    code = main(["score", str(image), "--prompt", "x", "--checkpoint", "tiny", "--device", "gpu"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "--device gpu" in err


def test_split_lists_read_the_same_in_train_and_reproduce(capsys):
    parser = build_parser()
    assert parser.parse_args(["train", "--splits", "1,3,5-7"]).splits == [1, 3, 5, 6, 7]
    assert parser.parse_args(["reproduce", "--only-splits", "1,3,5-7"]).only_splits == [1, 3, 5, 6, 7]
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--splits", "1,x"])
    assert "--splits: invalid number_list value: '1,x'" in capsys.readouterr().err
