"""`ipce predict` at scale: images/s and peak memory against the image count, and where the
time goes when a GPU is fed by the loader.

scale (default): N generated JPEGs (untimed), then `ipce predict` in a fresh process per
count, timed from its own summary line (images/s of the scoring loop) and from the outside
(wall time, start-up included); peak RSS of the predict process and of its largest loader
worker (os.wait4 and /proc VmHWM). Memory must not grow with the count.

feed (--feed): the same scorer and views three ways, batch by batch: the views already on
the device (the floor: the scorer alone), the loader alone in this process (decode, resize,
crops: what one worker delivers per core), and ipce's loader (ViewDataset + make_loader as
`ipce predict` runs it) feeding the scorer with 0 and with --workers worker processes. On the CPU it runs the
tiny backbone; on CUDA the --backbones (random weights: speed does not depend on them).

    python benchmarks/predict_bench.py --counts 200,2000 --json benchmarks/results/predict-cpu.json
    python benchmarks/predict_bench.py --feed --device cuda --backbones ViT-B-32,ViT-L-14 --precision bf16
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import machine_info, make_jpegs, write_result  # noqa: E402


def write_images(folder: Path, count: int, width: int, height: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.jpg")))
    for start in range(have, count, 100):
        for i, data in enumerate(make_jpegs(min(100, count - start), width, height, seed=start), start=start):
            (folder / f"SD_{i:06d}.jpg").write_bytes(data)
    return folder


def _watch_workers(pid: int, peak: dict, stop: threading.Event) -> None:
    """The largest VmHWM among the children of `pid` (loader workers), sampled until `stop`."""
    while not stop.is_set():
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        for child in children:
            try:
                for line in Path(f"/proc/{child}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak["worker"] = max(peak.get("worker", 0), int(line.split()[1]) / 1024)
            except OSError:
                pass
        stop.wait(0.05)


def run_predict(images: Path, count: int, out: Path, args) -> dict:
    """One `ipce predict` over the first `count` images, in a fresh process."""
    listing = out.with_suffix(".prompts.csv")
    names = sorted(p.name for p in images.glob("*.jpg"))[:count]
    listing.write_text("image,prompt\n" + "".join(f"{n},a photo of a red fox number {i % 50}\n"
                                                  for i, n in enumerate(names)))
    cmd = [sys.executable, "-m", "ipce", "predict", "--checkpoint", "tiny", "--images", str(images), "--prompts",
           str(listing), "--out", str(out), "--resize", str(args.resize), "--patches", str(args.patches),
           "--batch-size", str(args.batch), "--workers", str(args.workers), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, stop = {}, threading.Event()
    watcher = threading.Thread(target=_watch_workers, args=(proc.pid, peak, stop), daemon=True)
    watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stop.set()
    watcher.join()
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ipce predict failed:\n{stderr[-2000:]}")
    rate = re.search(r"\(([\d.]+) images/s\)", stdout)
    return {"images": count, "images_per_s": float(rate.group(1)), "wall_s": round(wall, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB; the predict process (or a child)
            "worker_peak_rss_mb": round(peak.get("worker", 0.0), 1)}


def scale(args) -> dict:
    folder = Path(args.images or tempfile.mkdtemp(prefix="ipce-predict-bench-"))
    write_images(folder, max(args.counts), args.width, args.height)
    rows = []
    for count in args.counts:
        row = run_predict(folder, count, folder.parent / f"{folder.name}-{count}.csv", args)
        print(f"{count:>7} images: {row['images_per_s']:8.2f} images/s, {row['wall_s']:7.1f} s wall, "
              f"peak RSS {row['peak_rss_mb']:7.1f} MB (largest loader worker {row['worker_peak_rss_mb']:.1f} MB)",
              flush=True)
        rows.append(row)
    return {"mode": "scale", "rows": rows}


def feed(args) -> dict:
    import torch

    from ipce.api import load_scorer
    from ipce.datasets.loader import ViewDataset, make_loader
    from ipce.datasets.sources import Record
    from ipce.models.views import ViewConfig

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    folder = write_images(Path(args.images or tempfile.mkdtemp(prefix="ipce-feed-bench-")), args.feed_images,
                          args.width, args.height)
    files = sorted(folder.glob("*.jpg"))[:args.feed_images]
    records = [Record(image=p, prompt=f"a photo of a red fox number {i % 50}", target=None, name=p.name)
               for i, p in enumerate(files)]
    backbones = args.backbones if device.type == "cuda" else ["tiny"]
    results = []
    for backbone in backbones:
        name = backbone if backbone == "tiny" else f"random:{backbone}"
        scorer = load_scorer(name, device=str(device), resize=args.resize, patches=args.patches,
                             precision=args.precision)
        config = ViewConfig(args.resize, args.patches)
        batches = [list(range(i, min(i + args.batch, len(records)))) for i in range(0, len(records), args.batch)]

        def loader(workers):
            return make_loader(ViewDataset(records, config, tolerant=True), args.batch, shuffle=False,
                               workers=workers, device=device, batches=batches)

        def score(batch):
            prompts = [records[i].prompt for i in batch.indices.tolist()]
            return scorer.score_views({config: (batch.crops, batch.global_view)}, prompts)

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize()

        on_device = [(b.crops.to(device), b.global_view.to(device), b.indices) for b in loader(args.workers)]
        for crops, global_view, _ in on_device[:2]:  # warm-up (cuDNN, allocator, text cache cleared below)
            scorer.score_views({config: (crops, global_view)}, ["warm up"] * len(crops))
        row = {"backbone": backbone, "precision": args.precision, "images": len(records)}
        for member in scorer.members:
            member.model.text_cache.clear()
        sync()
        start = time.perf_counter()
        for crops, global_view, indices in on_device:
            scorer.score_views({config: (crops, global_view)}, [records[i].prompt for i in indices.tolist()])
        sync()
        row["floor_images_per_s"] = len(records) / (time.perf_counter() - start)
        del on_device
        start = time.perf_counter()
        for _ in loader(0):  # decode, resize and crops on this one core, no scoring: one worker's rate
            pass
        row["loader_alone_1_core_images_per_s"] = len(records) / (time.perf_counter() - start)
        for workers in sorted({0, args.workers}):
            for member in scorer.members:
                member.model.text_cache.clear()
            sync()
            start = time.perf_counter()
            for batch in loader(workers):
                score(batch)
            sync()
            row[f"loader_{workers}_workers_images_per_s"] = len(records) / (time.perf_counter() - start)
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        results.append(row)
    return {"mode": "feed", "device": str(device), "rows": results}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", default="200,2000", help="scale: image counts, comma-separated (default 200,2000)")
    p.add_argument("--feed", action="store_true", help="the feed measurement instead of the scale one")
    p.add_argument("--device", default="cpu", help="feed: cpu or cuda (default cpu)")
    p.add_argument("--backbones", default="ViT-B-32,ViT-L-14", help="feed on CUDA: open_clip names (random weights)")
    p.add_argument("--precision", default="bf16", help="feed: fp32, bf16 or fp16 (default bf16)")
    p.add_argument("--feed-images", type=int, default=256, help="feed: images (default 256)")
    p.add_argument("--images", default=None, help="folder for the generated images (default: a new temporary one)")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--resize", type=int, default=512, help="adaptive resize S (default 512)")
    p.add_argument("--patches", type=int, default=15, help="evaluation crops (default 15)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS of predict)")
    p.add_argument("--json", default=None, help="write the settings and every number here")
    args = p.parse_args(argv)
    args.counts = [int(c) for c in args.counts.split(",")]
    args.backbones = args.backbones.split(",")
    result = feed(args) if args.feed else scale(args)
    result.update(machine=machine_info(), settings={k: v for k, v in vars(args).items() if k != "json"})
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
