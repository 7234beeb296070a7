"""`ipce predict` at scale: rows streamed to part files, --resume after a kill -9, the settings
sidecar, and torchrun processes that give the one-process file."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipce.cli import main
from tests.conftest import random_image, tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--resize", "224", "--patches", "2"]


def folder_of_images(folder, n, broken=()):
    """n images SD_000.png ... (sizes differ, so scores differ); the positions in `broken` unreadable."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"SD_{i:03d}.png"
        random_image(72 + 8 * (i % 5), 64, seed=i).save(path)
        if i in broken:
            path.write_bytes(path.read_bytes()[:60])  # truncated
    return folder


PROMPTS = ["a cat on a mat", "two red apples on a wooden table in the morning light", "a castle",
           "an astronaut riding a horse on the moon, photorealistic, 8k, highly detailed", "a blue bird"]


def predict_argv(ckpt, images, out, *extra):
    """Every image of `images` with a prompts file beside it: prompts of several lengths, each
    repeated, so that a text's features are cached in one block and reused in later ones."""
    listing = Path(images).parent / "prompts.csv"
    names = sorted(p.name for p in Path(images).iterdir() if p.suffix == ".png")
    with listing.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("image", "prompt"), *((n, PROMPTS[i % 5]) for i, n in enumerate(names))])
    return ["predict", "--checkpoint", str(ckpt), "--images", str(images), "--prompts", str(listing),
            "--out", str(out), "--workers", "0", "--no-progress", *extra]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def ipce_run(argv) -> subprocess.CompletedProcess:
    """`ipce ARGV` in a subprocess on one thread (env), as the killed runs and torchrun's ranks are:
    a CPU sum over another thread count rounds differently in the 7th digit, and the files are
    compared byte for byte."""
    return subprocess.run([sys.executable, "-m", "ipce", *argv], env=env(), capture_output=True, text=True,
                          timeout=600)


def data_rows(part_file):
    """The complete rows (header left out) of a part file, as a kill left it."""
    text = Path(part_file).read_text(encoding="utf-8")
    return list(csv.reader(text[:text.rfind("\n") + 1].splitlines()))[1:]


def read(path):
    return Path(path).read_bytes()


def killed_run(ckpt, images, out, views, rows: int) -> set[int]:
    """Run predict in a subprocess and kill -9 it once its part file holds `rows` rows; the records
    whose rows it left."""
    part = Path(f"{out}.parts") / "a000-r000.csv"
    proc = subprocess.Popen([sys.executable, "-m", "ipce", *predict_argv(ckpt, images, out, *views)],
                            cwd=Path(out).parent, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if part.is_file() and len(data_rows(part)) >= rows:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert not Path(out).exists()  # killed before the end
    done = {int(row[0]) for row in data_rows(part)}
    assert done == set(range(len(done)))  # whole blocks, in annotation order
    with part.open("a") as f:
        f.write("3,,2.5")  # a row torn by the crash: cut on resume
    return done


# slow enough per image (16 views of 512 px) to be caught part way
SLOW_VIEWS = ["--resize", "512", "--patches", "15", "--batch-size", "2"]


def whole_and_killed(tmp_path, seed: int):
    """(checkpoint, images, the killed run's output, the records it left): 40 images scored once
    uninterrupted into whole.csv, once killed part way into killed.csv."""
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=seed)
    images = folder_of_images(tmp_path / "imgs", 40)
    assert ipce_run(predict_argv(ckpt, images, tmp_path / "whole.csv", *SLOW_VIEWS)).returncode == 0
    out = tmp_path / "killed.csv"
    return ckpt, images, out, killed_run(ckpt, images, out, SLOW_VIEWS, rows=6)


@pytest.mark.slow
def test_a_run_killed_part_way_resumes_to_the_uninterrupted_file(tmp_path):
    ckpt, images, out, before = whole_and_killed(tmp_path, seed=1)
    assert 6 <= len(before) < 40

    resumed = ipce_run(predict_argv(ckpt, images, out, *SLOW_VIEWS, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    printed = resumed.stdout
    assert f"resuming: {len(before)} of 40 images were done" in printed
    assert f"({40 - len(before)} by this run, {len(before)} done before)" in printed  # only the rest scored
    assert read(out) == read(tmp_path / "whole.csv")
    assert not Path(f"{out}.parts").exists()  # merged, then removed


def test_resume_is_refused_with_other_settings_and_a_finished_file_is_left_alone(tmp_path, capsys):
    ck1 = tiny_checkpoint(tmp_path / "a.safetensors", seed=1)
    ck2 = tiny_checkpoint(tmp_path / "b.safetensors", seed=2)
    images = folder_of_images(tmp_path / "imgs", 4)
    out = tmp_path / "s.csv"
    assert main(predict_argv(ck1, images, out, *FAST)) == 0
    first = read(out)
    capsys.readouterr()
    for changed, named in ((["--checkpoint", str(ck2)], "--checkpoint differs"),
                           (["--patches", "3"], "--patches differs"), (["--precision", "bf16"], "--precision differs")):
        argv = predict_argv(ck1, images, out, *FAST, "--resume", "--precision", "fp32")
        argv[argv.index(changed[0]) + 1] = changed[1]  # the same command with one setting changed
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert named in err and err.count("\n") == 1, err
        assert read(out) == first
    # the same command again: nothing is scored, the file stays
    assert main(predict_argv(ck1, images, out, *FAST, "--resume")) == 0
    assert "nothing left to score" in capsys.readouterr().out and read(out) == first


def test_another_input_is_refused_on_resume(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=3)
    images = folder_of_images(tmp_path / "imgs", 3)
    out = tmp_path / "s.csv"
    assert main(predict_argv(ckpt, images, out, *FAST)) == 0
    folder_of_images(tmp_path / "imgs", 4)  # one image more
    assert main(predict_argv(ckpt, images, out, *FAST, "--resume")) == 1
    err = capsys.readouterr().err
    assert "input" in err and "3 records" in err and "4 records" in err


def test_the_model_is_loaded_and_the_run_planned_before_the_process_group_is_joined(tmp_path, monkeypatch):
    """Joining waits for every rank: joined last, a rank waits only for the slowest rank's start-up; joined
    before the model load, rank 1 waited for rank 0's start-up and rank 0 then for rank 1's load."""
    import ipce.commands.predict as predict
    import ipce.utils.distributed as distributed

    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=6)
    images = folder_of_images(tmp_path / "imgs", 3)
    out = tmp_path / "s.csv"
    events, load = [], predict.scorer_from_args

    def loading(*args, **kwargs):
        events.append("model")
        return load(*args, **kwargs)

    monkeypatch.setattr(predict, "scorer_from_args", loading)
    monkeypatch.setattr(distributed, "join_group",
                        lambda device: events.append(("join", Path(f"{out}.ipce.json").is_file())))
    assert main(predict_argv(ckpt, images, out, *FAST)) == 0
    assert events == ["model", ("join", True)]  # after the load and rank 0's plan (the settings written)
    assert len(read(out).splitlines()) == 4


def test_rank_shares_deal_every_block_once_in_order_with_rank_0_never_the_largest():
    from ipce.engine.predict import rank_share

    for blocks in (list(range(125)), list(range(3, 40, 2)), [7]):
        for world in (1, 2, 3, 4):
            shares = [rank_share(blocks, rank, world) for rank in range(world)]
            assert sorted(b for share in shares for b in share) == sorted(blocks)
            assert all(share == sorted(share) for share in shares)  # each rank's part file in index order
            sizes = [len(share) for share in shares]
            assert max(sizes) - min(sizes) <= 1 and sizes[0] == min(sizes)  # rank 0 also merges: the smaller share


def torchrun(argv, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "ipce",
           *argv]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_write_the_one_process_file_and_list_each_unreadable_image_once(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=4)
    images = folder_of_images(tmp_path / "imgs", 12, broken=(1, 6, 7))
    assert ipce_run(predict_argv(ckpt, images, tmp_path / "one.csv", *FAST, "--batch-size", "2")).returncode == 3
    done = torchrun(predict_argv(ckpt, images, tmp_path / "two.csv", *FAST, "--batch-size", "2"))
    assert (tmp_path / "two.csv").is_file(), done.stderr[-3000:]
    assert read(tmp_path / "two.csv") == read(tmp_path / "one.csv")
    assert read(tmp_path / "two.errors.csv") == read(tmp_path / "one.errors.csv")
    listed = [row[0] for row in csv.reader(read(tmp_path / "two.errors.csv").decode().splitlines())][1:]
    assert [Path(p).name for p in listed] == ["SD_001.png", "SD_006.png", "SD_007.png"]
    assert done.stdout.count("skipped 3 unreadable") == 1  # rank 0 alone reports


@pytest.mark.slow
def test_a_one_process_run_killed_part_way_resumes_under_two_processes(tmp_path):
    ckpt, images, out, before = whole_and_killed(tmp_path, seed=5)
    done = torchrun(predict_argv(ckpt, images, out, *SLOW_VIEWS, "--resume"))
    assert f"resuming: {len(before)} of 40 images were done" in done.stdout, done.stderr[-3000:]
    assert read(out) == read(tmp_path / "whole.csv")
