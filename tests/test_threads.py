"""Threads from the cores a process may use: its affinity (not the machine's count), split between
torch and the loader's workers; --threads on every command that runs a model."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ipce.cli import build_parser
from ipce.commands.flags import use_cores
from ipce.errors import IpceError
from ipce.utils.threads import split_cores

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cores, threads, workers", [(1, 1, 0), (2, 1, 1), (3, 2, 1), (4, 2, 2), (16, 14, 2)])
def test_cores_are_split_between_torch_and_the_loader(cores, threads, workers):
    assert split_cores(None, None, cores) == (threads, workers)
    assert split_cores(5, None, cores) == (5, workers)  # given: as given
    assert split_cores(None, 0, cores) == (cores, 0)


CHILD = """
import argparse, json, os, torch
from ipce.commands.flags import use_cores
from ipce.utils.threads import usable_cores
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # as `taskset -c N` would
workers = use_cores(argparse.Namespace(threads=None, workers=None))
print(json.dumps({"usable": usable_cores(), "threads": torch.get_num_threads(), "workers": workers,
                  "machine": os.cpu_count()}))
"""


def test_a_process_pinned_to_one_core_uses_one_thread_and_no_workers():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE")}
    out = subprocess.run([sys.executable, "-c", CHILD], env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["usable"] == 1 and seen["threads"] == 1 and seen["workers"] == 0


def test_threads_flag_sets_torch_and_an_environment_setting_is_kept(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert use_cores(argparse.Namespace(threads=3, workers=1)) == 1
        assert torch.get_num_threads() == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(2)
        use_cores(argparse.Namespace(threads=None, workers=None))  # the environment's choice stands
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(IpceError, match="--threads 0: must be at least 1"):
        use_cores(argparse.Namespace(threads=0, workers=None))


def test_every_command_that_runs_a_model_takes_threads():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in ("score", "predict", "rank", "explain", "serve", "demo", "train", "reproduce"):
        flags = {s for a in commands[name]._actions for s in a.option_strings}
        assert "--threads" in flags, name
