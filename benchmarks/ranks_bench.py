"""`ipce predict` as one process against torchrun ranks on the same images: does a second rank
halve the time?

Writes a tiny random checkpoint (tests.conftest.tiny_checkpoint) and N small generated JPEGs
(128x96) with a prompts CSV (50 distinct prompts), untimed; runs both commands once untimed on 32
of the images (warm file caches); then, per view setting of --views (the checkpoint's own 512 px
and 15 crops, and 224 px with 4 crops: less work per image, so start-up weighs more), REPEATS
rounds, each `ipce predict` as one process and then `torchrun --nproc_per_node NPROC -m ipce
predict` (as `python -m torch.distributed.run --standalone`), every process at --threads torch
threads (OMP_NUM_THREADS too) and --workers loader workers (default 0: each process decodes its
own images, as a torchrun rank on a 2-core machine does by default). Each run is timed from the
outside (wall time: start-up, model loading, joining, scoring, merge, exit), by its own summary
line (the scoring loop; under torchrun the slowest rank's), and by the CPU seconds of its process
tree. Every torchrun output must equal the one-process output byte for byte. Reports the medians
and ratio = median torchrun wall / median one-process wall; every run, with the load average
before it, is in the JSON.

    python benchmarks/ranks_bench.py --json benchmarks/results/ranks-cpu-tiny.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import machine_info, make_jpegs, write_result  # noqa: E402

from tests.conftest import tiny_checkpoint  # noqa: E402


def write_data(root: Path, count: int, width: int, height: int) -> tuple[Path, Path, Path]:
    """(checkpoint, images folder, prompts CSV) under `root`."""
    checkpoint = tiny_checkpoint(root / "tiny.safetensors", seed=0)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for start in range(0, count, 100):
        for i, data in enumerate(make_jpegs(min(100, count - start), width, height, seed=start), start=start):
            (images / f"SD_{i:06d}.jpg").write_bytes(data)
    prompts = root / "prompts.csv"
    prompts.write_text("image,prompt\n" + "".join(f"SD_{i:06d}.jpg,a photo of a red fox number {i % 50}\n"
                                                  for i in range(count)))
    return checkpoint, images, prompts


def view_flags(views: str) -> list[str]:
    """`checkpoint`: no flags (the checkpoint's views: 512 px, 15 crops); `RxP`: --resize R --patches P."""
    if views == "checkpoint":
        return []
    resize, patches = views.split("x")
    return ["--resize", resize, "--patches", patches]


def predict_argv(data: tuple[Path, Path, Path], out: Path, views: str, args) -> list[str]:
    checkpoint, images, prompts = data
    return ["-m", "ipce", "predict", "--checkpoint", str(checkpoint), "--images", str(images), "--prompts",
            str(prompts), "--out", str(out), *view_flags(views), "--batch-size", str(args.batch), "--threads",
            str(args.threads), "--workers", str(args.workers), "--no-progress"]


def timed(command: list[str], args) -> dict:
    """Run `command` (python arguments) with ipce from --tree: its wall seconds, its scoring seconds (its
    summary line) and the CPU seconds of its process tree (os.wait4: torchrun waits for its ranks)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(args.tree)}
    load = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *command], env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        printed, problems = out.read(), err.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(command)}\n{problems[-3000:]}")
    scoring = re.search(r"scored \d+ of \d+ images in ([\d.]+) s", printed)
    return {"wall_s": round(wall, 2), "scoring_s": float(scoring.group(1)),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "load_average_before": round(load, 2)}


def one_round(data: tuple[Path, Path, Path], root: Path, views: str, args) -> dict:
    """One process, then the torchrun ranks, on the same images; their outputs must be the same bytes."""
    one_out, ranks_out = root / "one.csv", root / "ranks.csv"
    one = timed(predict_argv(data, one_out, views, args), args)
    ranks = timed(["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
                   *predict_argv(data, ranks_out, views, args)], args)
    if one_out.read_bytes() != ranks_out.read_bytes():
        raise SystemExit(f"{ranks_out} differs from the one-process {one_out}")
    return {"one_process": one, "ranks": ranks, "ratio": round(ranks["wall_s"] / one["wall_s"], 3)}


def summary(rounds: list[dict]) -> dict:
    def median(who: str, key: str) -> float:
        return round(statistics.median(r[who][key] for r in rounds), 2)

    found = {f"{who}_{key}": median(who, key) for who in ("one_process", "ranks")
             for key in ("wall_s", "scoring_s", "cpu_s")}
    found["ratio"] = round(found["ranks_wall_s"] / found["one_process_wall_s"], 3)
    found["scoring_ratio"] = round(found["ranks_scoring_s"] / found["one_process_scoring_s"], 3)
    found["cpu_ratio"] = round(found["ranks_cpu_s"] / found["one_process_cpu_s"], 3)
    return found


def measure(root: Path, args) -> dict:
    """Per view setting: the load average before its rounds, the rounds and their medians, over data
    written under `root`."""
    data = write_data(root, args.images, args.width, args.height)
    warm = root / "warm"
    warm.mkdir()
    warm_prompts = warm / "prompts.csv"
    warm_prompts.write_text("".join(data[2].read_text().splitlines(keepends=True)[:33]))
    one_round((data[0], data[1], warm_prompts), warm, args.views[0], args)  # untimed: file caches, bytecode
    found = {}
    for views in args.views:
        load_start, rounds = [round(x, 2) for x in os.getloadavg()], []
        for i in range(args.repeats):
            rounds.append(one_round(data, root, views, args))
            print(f"{views}, round {i + 1}: {json.dumps(rounds[-1])}", flush=True)
        found[views] = {"median": summary(rounds), "load_average_start": load_start, "rounds": rounds}
        m = found[views]["median"]
        print(f"{views}: {args.images} images, medians of {args.repeats}: one process {m['one_process_wall_s']} s "
              f"(scoring {m['one_process_scoring_s']} s), {args.nproc} torchrun ranks {m['ranks_wall_s']} s "
              f"(scoring {m['ranks_scoring_s']} s); ratio {m['ratio']} (scoring alone {m['scoring_ratio']}); "
              f"CPU seconds {m['one_process_cpu_s']} and {m['ranks_cpu_s']}", flush=True)
    return found


def commit_of(tree: Path) -> str | None:
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--views", default="checkpoint,224x4",
                   help="view settings to time, comma-separated: checkpoint (its 512 px, 15 crops) or RESIZExPATCHES "
                        "(default checkpoint,224x4)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--nproc", type=int, default=2, help="torchrun ranks (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--workers", type=int, default=0, help="loader workers per process (default 0)")
    p.add_argument("--repeats", type=int, default=3, help="rounds of (one process, ranks); medians (default 3)")
    p.add_argument("--tree", type=Path, default=ROOT, help="the ipce checkout to time (default: this one)")
    p.add_argument("--json", default=None, help="write the settings and every run here")
    args = p.parse_args(argv)
    args.views = args.views.split(",")
    with tempfile.TemporaryDirectory(prefix="ipce-ranks-bench-") as tmp:
        found = measure(Path(tmp), args)
    machine = machine_info()
    machine["load_average_end"] = machine.pop("load_average")
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "tree")}
    result = {"views": found, "machine": machine, "settings": settings, "commit": commit_of(args.tree)}
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
