"""The differentiable reward and the quality map: speed, and the reward's agreement with score().

    python benchmarks/reward_bench.py [--device cpu|cuda] [--backbone random:ViT-B-32] [--batch 2]
        [--repeats 3] [--threads 1] [--agreement-checkpoint CKPT ...] [--parts reward,explain,agreement]
        [--json OUT]

Rows:
- reward forward+backward: `Scorer.reward` of `--batch` 512x512 images (float pixels that require
  gradients, one prompt each), then `.sum().backward()` to the pixels and the weights; images/s,
  fp32 and bf16 autocast; one untimed call, then the median of `--repeats`.
- explain: `ipce explain` of one 1024x1024 PNG (the grid at the method's own stride 48, 324 crops,
  the PNG and the CSV written), wall seconds in this process with the model's loading, fp32 and
  bf16, after one untimed `Scorer.explain` of a small image; then `Scorer.explain` of the
  1024x1024 image alone, the median of `--repeats`.
- agreement: for each checkpoint (with its own resize, then each `--agreement-resize`),
  |reward - score| on 0..5 over 12 generated PNGs of 6 sizes (at resize 512: 3 below it, which
  Pillow and the tensor path resample differently; 3 at or above it), each image read back from
  its file: max and mean.
Random weights do not change the speed; the agreement is also measured on a trained checkpoint
when one is given (e.g. the demo's best.safetensors).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import ipce
from ipce.cli import main as ipce_main

SIZES = [(300, 200), (400, 400), (350, 500), (512, 512), (640, 560), (768, 1024)]


def smooth_image(width: int, height: int, seed: int) -> Image.Image:
    """A smooth random picture with grain (as benchmarks/run.py's inputs)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 32, 2), max(width // 32, 2), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), dtype=np.float32)
    return Image.fromarray(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8))


def pixels_of(path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)[None].float() / 255


def reward_rate(scorer, batch: int, repeats: int) -> dict:
    pixels = torch.stack([pixels_of_image(smooth_image(512, 512, seed=i)) for i in range(batch)])
    prompts = [f"a photo number {i} of a red bicycle leaning on a blue wall" for i in range(batch)]
    model = scorer.members[0].model

    def once() -> float:
        given = pixels.clone().to(scorer.device).requires_grad_(True)
        model.zero_grad(set_to_none=True)
        started = time.perf_counter()
        scorer.reward(given, prompts).sum().backward()
        if scorer.device.type == "cuda":
            torch.cuda.synchronize()
        assert given.grad is not None
        return time.perf_counter() - started

    once()
    seconds = [once() for _ in range(repeats)]
    median = statistics.median(seconds)
    return {"seconds": median, "seconds_all": seconds, "images_per_s": batch / median, "batch": batch}


def pixels_of_image(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255


def explain_seconds(checkpoint: str, precision: str, device: str, folder: Path, repeats: int) -> dict:
    image = folder / "big_1024.png"
    smooth_image(1024, 1024, seed=0).save(image)
    scorer = ipce.load_scorer(checkpoint, device=device, precision=precision)
    scorer.explain(smooth_image(256, 256, seed=1), "warm-up")  # the first call's one-time costs
    started = time.perf_counter()
    code = ipce_main(["explain", str(image), "--prompt", "a red bicycle leaning on a blue wall", "--checkpoint",
                      checkpoint, "--out", str(folder / f"maps-{precision}"), "--precision", precision, "--device",
                      device, "--no-progress"])
    command = time.perf_counter() - started
    assert code == 0
    alone = []
    for _ in range(repeats):
        started = time.perf_counter()
        qmap = scorer.explain(image, "a red bicycle leaning on a blue wall")
        alone.append(time.perf_counter() - started)
    return {"command_seconds": command, "explain_seconds": statistics.median(alone), "explain_seconds_all": alone,
            "crops": len(qmap.boxes), "stride": qmap.stride}


def agreement(checkpoint: str, device: str, folder: Path, resize: int | None = None) -> dict:
    scorer = ipce.load_scorer(checkpoint, device=device, resize=resize)
    diffs = []
    for i in range(12):
        width, height = SIZES[i % len(SIZES)]
        path = folder / f"agree_{i}.png"
        smooth_image(width, height, seed=100 + i).save(path)
        with torch.no_grad():
            reward = scorer.reward(pixels_of(path), "a red bicycle").item()
        diffs.append(abs(reward - scorer.score(path, "a red bicycle")[0]))
    resized = [d for i, d in enumerate(diffs) if min(SIZES[i % len(SIZES)]) < scorer.members[0].views.resize]
    return {"checkpoint": checkpoint, "images": len(diffs), "max_abs_diff": max(diffs),
            "mean_abs_diff": float(np.mean(diffs)), "max_abs_diff_resized": max(resized),
            "resize": scorer.members[0].views.resize}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="random:ViT-B-32")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads; also set OMP_NUM_THREADS")
    parser.add_argument("--agreement-checkpoint", action="append", default=[], metavar="CKPT",
                        help="also measure the agreement on this checkpoint (repeatable)")
    parser.add_argument("--agreement-resize", type=int, action="append", default=[], metavar="S",
                        help="also measure the agreement with this resize instead of each checkpoint's (repeatable)")
    parser.add_argument("--parts", default="reward,explain,agreement", help="which parts run, comma-separated")
    parser.add_argument("--json", default=None, metavar="OUT")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    parts = set(args.parts.split(","))
    result = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                          "threads": args.threads, "torch": torch.__version__, "device": args.device,
                          "cuda": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
                          "load_average": list(os.getloadavg())},
              "settings": vars(args), "reward": {}, "explain": {}, "agreement": []}
    for precision in ("fp32", "bf16") if "reward" in parts else ():
        scorer = ipce.load_scorer(args.backbone, device=args.device, precision=precision)
        row = reward_rate(scorer, args.batch, args.repeats)
        result["reward"][precision] = row
        print(f"reward forward+backward {args.backbone} 512x512 {precision}: {row['images_per_s']:.3f} images/s "
              f"(batch {args.batch}, median of {args.repeats})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16") if "explain" in parts else ():
            row = explain_seconds(args.backbone, precision, args.device, Path(tmp), args.repeats)
            result["explain"][precision] = row
            print(f"ipce explain 1024x1024 {precision}: {row['command_seconds']:.1f} s for the command, "
                  f"{row['explain_seconds']:.1f} s in Scorer.explain ({row['crops']} crops, stride "
                  f"{row['stride']})", flush=True)
        checkpoints = [args.backbone, *args.agreement_checkpoint] if "agreement" in parts else []
        for checkpoint, resize in [(c, r) for c in checkpoints for r in [None, *args.agreement_resize]]:
            row = agreement(checkpoint, args.device, Path(tmp), resize)
            result["agreement"].append(row)
            print(f"reward vs score, {checkpoint}: max |diff| {row['max_abs_diff']:.5f}, mean "
                  f"{row['mean_abs_diff']:.5f} on 0..5 over {row['images']} images (resize {row['resize']}; max "
                  f"among the resized {row['max_abs_diff_resized']:.5f})", flush=True)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
