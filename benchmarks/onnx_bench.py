"""PyTorch against onnxruntime on the CPU, in one run: images/s of the same scorer's views and prompts.

A random-weights checkpoint of --backbone (speed does not depend on the weights) is exported with
`ipce export --format onnx` (the export is timed once); then both runtimes score the same
prepared views (512x512 images, the paper's 15 crops + the global view, --batch images per call,
distinct prompts, text caches cleared before every repeat), taking turns repeat by repeat so that
a change in the machine's load hits both alike. fp32, --threads threads for both (PyTorch's
set_num_threads, onnxruntime's intra-op threads). Also the largest score difference between them.
The machine's load average (as `uptime` gives it) is recorded before and after: on a shared
machine it says how much the figures can be trusted.

    OMP_NUM_THREADS=1 python benchmarks/onnx_bench.py --json benchmarks/results/onnx-cpu-ViT-B-32.json
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import machine_info, make_jpegs  # noqa: E402

import ipce  # noqa: E402
from ipce.engine.export import export_model  # noqa: E402
from ipce.models.backbone import infer_config, load_backbone  # noqa: E402
from ipce.models.checkpoint import save_checkpoint  # noqa: E402
from ipce.models.correspondence import CorrespondenceScorer  # noqa: E402
from ipce.models.views import ViewConfig, make_views  # noqa: E402


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def prepared_views(count: int, batch: int) -> list[tuple[dict, list[str]]]:
    """Per call: ({ViewConfig: (crops, global views)}, prompts) of `batch` 512x512 JPEGs."""
    config = ViewConfig(resize=512, patches=15)
    pictures = [Image.open(io.BytesIO(data)).convert("RGB") for data in make_jpegs(count, 512, 512)]
    calls = []
    for start in range(0, count, batch):
        pairs = [make_views(p, config) for p in pictures[start:start + batch]]
        crops, glob = torch.stack([c for c, _ in pairs]), torch.stack([g for _, g in pairs])
        prompts = [f"picture number {i} of a red bicycle beside a tree" for i in range(start, start + len(pairs))]
        calls.append(({config: (crops, glob)}, prompts))
    return calls


def time_once(scorer, calls) -> tuple[float, list[float]]:
    for member in scorer.members:
        member.model.text_cache.clear()
    scores, started = [], time.perf_counter()
    for views, prompts in calls:
        scores += scorer.score_views(views, prompts)[0].tolist()
    return time.perf_counter() - started, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="ViT-B-32", help="open_clip name (random weights), or tiny")
    parser.add_argument("--images", type=int, default=16, help="images scored per repeat")
    parser.add_argument("--batch", type=int, default=8, help="images per call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = uptime()
    with tempfile.TemporaryDirectory(prefix="ipce-onnx-bench-") as tmp:
        torch.manual_seed(0)
        name = args.backbone if args.backbone == "tiny" else f"random:{args.backbone}"
        clip, _, _ = load_backbone(name)
        checkpoint = save_checkpoint(Path(tmp) / "ckpt.safetensors", CorrespondenceScorer(clip),
                                     {"backbone": name, "model_config": infer_config(clip.state_dict())})
        started = time.perf_counter()
        export_model(checkpoint, Path(tmp) / "onnx", "onnx", use_summary=False)
        export_seconds = time.perf_counter() - started
        scorers = {"torch": ipce.load_scorer(checkpoint, device="cpu", batch_size=args.batch),
                   "onnxruntime": ipce.load_scorer(Path(tmp) / "onnx", device="cpu", batch_size=args.batch,
                                                   runtime="onnxruntime")}
        calls = prepared_views(args.images, args.batch)
        times = {name: [] for name in scorers}
        scores = {}
        for name, scorer in scorers.items():  # untimed warm-up
            scores[name] = time_once(scorer, calls[:1])[1]
        for repeat in range(args.repeats):
            for name, scorer in scorers.items():
                seconds, scores[name] = time_once(scorer, calls)
                times[name].append(seconds)
                print(f"repeat {repeat + 1}: {name:<12} {args.images / seconds:.3f} img/s", file=sys.stderr)
    result = {
        "what": f"{args.backbone} (random weights) scoring {args.images} 512x512 images, 15 crops + global view, "
                f"batch {args.batch}, distinct prompts, fp32, {args.threads} thread(s), both runtimes in turn",
        "command": "OMP_NUM_THREADS=1 python benchmarks/onnx_bench.py " + " ".join(sys.argv[1:]),
        "machine": {**machine_info(), "uptime_before": load_before, "uptime_after": uptime()},
        "export_seconds": round(export_seconds, 1),
        "max_abs_score_difference": max(abs(a - b) for a, b in zip(scores["torch"], scores["onnxruntime"])),
        "runtimes": {name: {"images_per_s_median": args.images / statistics.median(t),
                            "seconds": [round(s, 3) for s in t]} for name, t in times.items()},
    }
    result["onnxruntime_over_torch"] = (result["runtimes"]["onnxruntime"]["images_per_s_median"]
                                        / result["runtimes"]["torch"]["images_per_s_median"])
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
