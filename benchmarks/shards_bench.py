"""`ipce predict` on WebDataset shards against a folder of the same images: images/s and peak RSS,
and peak RSS against the number of shards (it must not grow with it).

N generated JPEGs (untimed) are written once as a folder with a prompts CSV and once as tar
shards of --per-shard images (webdataset.TarWriter); then `ipce predict` runs in a fresh process
on the folder (all N), and on the first k shards for each k of --shards, timed from the outside
(wall time, start-up included) with its peak RSS (os.wait4: the process or its largest child).

    python benchmarks/shards_bench.py --shards 4,16 --per-shard 50 --json benchmarks/results/shards-cpu-tiny.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import machine_info, make_jpegs, write_result  # noqa: E402


def prompt_of(i: int) -> str:
    return f"a photo of a red fox number {i % 50}"


def write_data(root: Path, count: int, per_shard: int, width: int, height: int) -> tuple[Path, Path]:
    import webdataset as wds

    folder, shards = root / "images", root / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    shards.mkdir(parents=True, exist_ok=True)
    images = make_jpegs(count, width, height, seed=0)
    for i, data in enumerate(images):
        (folder / f"SD_{i:06d}.jpg").write_bytes(data)
    (root / "prompts.csv").write_text("image,prompt\n" + "".join(f"SD_{i:06d}.jpg,{prompt_of(i)}\n"
                                                                  for i in range(count)))
    for s in range(0, count, per_shard):
        with wds.TarWriter(str(shards / f"{s // per_shard:05d}.tar")) as writer:
            for i in range(s, min(count, s + per_shard)):
                writer.write({"__key__": f"SD_{i:06d}", "jpg": images[i], "txt": prompt_of(i)})
    return folder, shards


def run(argv: list[str], args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "ipce", "predict", "--checkpoint", "tiny", "--resize", str(args.resize),
           "--patches", str(args.patches), "--batch-size", str(args.batch), "--workers", str(args.workers),
           "--threads", str(args.threads), "--no-progress", *argv]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ipce predict failed:\n{proc.stderr.read()[-2000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", default="4,16", help="shard counts to run, comma-separated (default 4,16)")
    p.add_argument("--per-shard", type=int, default=50)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=192)
    p.add_argument("--resize", type=int, default=224)
    p.add_argument("--patches", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    counts = [int(c) for c in args.shards.split(",")]
    total = max(counts) * args.per_shard
    root = Path(tempfile.mkdtemp(prefix="ipce-shards-bench-"))
    folder, shards = write_data(root, total, args.per_shard, args.width, args.height)
    rows = []
    row = run(["--images", str(folder), "--prompts", str(root / "prompts.csv"), "--out", str(root / "f.csv")], args)
    row.update(input="folder", images=total, images_per_s=round(total / row["wall_s"], 2))
    rows.append(row)
    print(json.dumps(row), flush=True)
    for k in counts:
        pattern = str(shards / f"{{00000..{k - 1:05d}}}.tar")
        row = run(["--webdataset", pattern, "--out", str(root / f"s{k}")], args)
        row.update(input="webdataset", shards=k, images=k * args.per_shard,
                   images_per_s=round(k * args.per_shard / row["wall_s"], 2))
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"rows": rows, "machine": machine_info(), "settings": vars(args)}
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
