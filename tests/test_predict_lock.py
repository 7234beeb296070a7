"""One `ipce predict` per output: a second process on the same --out is refused at once, naming the
first; a killed holder leaves no lock behind; an output is never taken as complete without its rows."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipce.cli import main
from ipce.errors import IpceError
from ipce.utils.lock import hold_lock, lock_path
from tests.test_predict_resume import FAST, SLOW_VIEWS, data_rows, env, folder_of_images, ipce_run, predict_argv
from tests.conftest import tiny_checkpoint

HOLD = "import sys, time; from ipce.utils.lock import hold_lock\n" \
       "with hold_lock(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(600)\n"


def wait_for_holder(lock: Path, proc) -> str:
    """The lock file's text once `proc` has written its pid there."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if lock.is_file() and f"pid {proc.pid} " in lock.read_text():
            return lock.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{lock} never named pid {proc.pid} (exit {proc.poll()})")


def test_a_held_lock_is_refused_naming_its_holder_and_a_killed_holder_leaves_none(tmp_path):
    out = tmp_path / "scores.csv"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(IpceError) as refused:
            with hold_lock(out, "--out scores.csv"):
                pass
        assert f"pid {holder.pid} on " in str(refused.value) and "--out scores.csv" in str(refused.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(out).is_file()  # a kill -9 leaves the file, but not the lock
    with hold_lock(out, "--out scores.csv") as lock:
        assert f"pid {os.getpid()} " in lock.read_text()
    assert not lock_path(out).exists()  # released and removed at the end


def count_rows(path) -> int:
    with open(path, newline="", encoding="utf-8") as f:
        return sum(1 for _ in csv.reader(f)) - 1


@pytest.mark.slow
def test_a_second_predict_on_the_same_out_is_refused_while_the_first_finishes(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=3)
    images = folder_of_images(tmp_path / "imgs", 12)
    out = tmp_path / "race.csv"
    first = subprocess.Popen([sys.executable, "-m", "ipce", *predict_argv(ckpt, images, out, *SLOW_VIEWS)],
                             env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_holder(lock_path(out), first)
        first.send_signal(signal.SIGSTOP)  # the first holds the lock, mid-run, while the second starts
        second = ipce_run(predict_argv(ckpt, images, out, *SLOW_VIEWS, "--resume"))
    finally:
        first.send_signal(signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]

    assert second.returncode == 1 and second.stdout == ""
    assert second.stderr.count("\n") == 1  # one line
    assert f"--out {out}: in use by pid {first.pid} on " in second.stderr
    assert count_rows(out) == 12  # the first run's rows, all of them
    assert f"wrote {out}" in stdout
    assert not lock_path(out).exists()


@pytest.mark.slow
def test_a_killed_holder_does_not_block_the_next_run(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=4)
    images = folder_of_images(tmp_path / "imgs", 12)
    out = tmp_path / "killed.csv"
    first = subprocess.Popen([sys.executable, "-m", "ipce", *predict_argv(ckpt, images, out, *SLOW_VIEWS)],
                             env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_holder(lock_path(out), first)
    part = Path(f"{out}.parts") / "a000-r000.csv"
    while first.poll() is None and not (part.is_file() and data_rows(part)):  # mid-run: a block written
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert lock_path(out).is_file() and not out.exists()  # killed mid-run, its lock file left behind

    after = ipce_run(predict_argv(ckpt, images, out, *SLOW_VIEWS, "--resume"))
    assert after.returncode == 0, after.stderr[-3000:]
    assert "resuming:" in after.stdout
    assert count_rows(out) == 12


def scored_once(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=5)
    images = folder_of_images(tmp_path / "imgs", 6)
    out = tmp_path / "done.csv"
    argv = predict_argv(ckpt, images, out, *FAST, "--batch-size", "4")
    assert main(argv) == 0
    return argv, out


@pytest.mark.parametrize("damage", ["removed", "truncated"])
def test_a_finished_output_that_lost_rows_is_scored_again_on_resume(tmp_path, capsys, damage):
    argv, out = scored_once(tmp_path)
    whole = out.read_bytes()
    if damage == "removed":
        out.unlink()
    else:
        out.write_bytes(whole[:whole.index(b"\n") + 1])  # the header only
    capsys.readouterr()

    assert main([*argv, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "nothing left to score" not in printed
    assert "scoring every image again" in printed
    assert out.read_bytes() == whole


def test_a_finished_output_is_left_alone_on_resume(tmp_path, capsys):
    argv, out = scored_once(tmp_path)
    stamp = out.stat().st_mtime_ns
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    assert f"nothing left to score: {out} is complete (6 scored" in capsys.readouterr().out
    assert out.stat().st_mtime_ns == stamp
