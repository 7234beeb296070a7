"""Per row of `run.py` results: img/s, TFLOP/s and the fraction of the GPU's peak.

    python benchmarks/gpu_report.py --gemm OUT/gemm.json            # measure the bf16 GEMM rate (CUDA)
    python benchmarks/gpu_report.py OUT/ViT-L-14.json ... [--gemm-json OUT/gemm.json] [--peak 989]

FLOP counts (forward, multiply-add = 2): a transformer block of width d over N tokens costs
24·N·d² (the q, k, v and output projections, the 4x MLP) + 4·N²·d (scores and the weighted sum);
an image view adds its patch embedding (2·patches·3·p²·d), a text is counted at the full 77
tokens (ipce cuts the padding, so the text share is an upper bound). ViT-L/14: 162 GFLOP a view,
13.3 GFLOP a text. An evaluated image is 16 views + 5 texts; a trained one 3x (forward + backward)
of 9 views + 5 texts; a floor row ("image encoder alone") 16 views. Two denominators: `--peak`
(TFLOP/s; default the spec sheet's dense bf16 rate of the GPU when known: H100/H200 989, A100 312)
and the bf16 GEMM rate measured on this GPU at ViT-L/14's matrix shapes (`--gemm`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SPEC_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense, without sparsity
EVAL_VIEWS, TRAIN_VIEWS, TEXTS, CONTEXT = 16, 9, 5, 77


def block_flops(tokens: int, width: int) -> float:
    return 24 * tokens * width ** 2 + 4 * tokens ** 2 * width


def tower_flops(backbone: str) -> tuple[float, float]:
    """(FLOP of one 224x224 view through the image tower, FLOP of one 77-token text)."""
    from ipce.models.backbone import model_config

    name = backbone.removeprefix("random:")
    config = model_config(name)
    vision, text = config["vision_cfg"], config["text_cfg"]
    patch, width = vision["patch_size"], vision["width"]
    patches = (vision["image_size"] // patch) ** 2
    view = vision["layers"] * block_flops(patches + 1, width) + 2 * patches * 3 * patch ** 2 * width
    view += 2 * width * config["embed_dim"]
    words = text["layers"] * block_flops(CONTEXT, text["width"]) + 2 * text["width"] * config["embed_dim"]
    return float(view), float(words)


def image_flops(kind: str, view: float, text: float) -> float:
    if kind == "floor":
        return EVAL_VIEWS * view
    if kind == "train":
        return 3 * (TRAIN_VIEWS * view + TEXTS * text)
    return EVAL_VIEWS * view + TEXTS * text


def measure_gemm(repeats: int = 20) -> dict:
    """The bf16 matmul rate at ViT-L/14's shapes for a batch of 16 images x 16 views (M = 256 x 257
    tokens): the qkv, output, MLP-in and MLP-out projections; the best and the token-weighted mean."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--gemm: needs a CUDA device")
    tokens = 256 * 257
    shapes = {"qkv": (1024, 3072), "out": (1024, 1024), "mlp in": (1024, 4096), "mlp out": (4096, 1024)}
    rates, flops_all, seconds_all = {}, 0.0, 0.0
    for name, (k, n) in shapes.items():
        a = torch.randn(tokens, k, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            a @ b
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1000 / repeats
        flops = 2.0 * tokens * k * n
        rates[name] = flops / seconds / 1e12
        flops_all += flops
        seconds_all += seconds
    return {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "tokens": tokens,
            "tflops": rates, "best_tflops": max(rates.values()), "block_tflops": flops_all / seconds_all / 1e12}


def spec_peak(gpu: str) -> float | None:
    return next((rate for key, rate in SPEC_BF16_TFLOPS.items() if key in gpu), None)


def report(paths: list[str], peak: float | None, gemm: dict | None) -> str:
    lines = []
    for path in paths:
        results = json.loads(Path(path).read_text())
        backbone = results["settings"]["backbone"]
        view, text = tower_flops(backbone)
        gpu = results["machine"].get("cuda", "")
        top = peak or spec_peak(gpu)
        measured = gemm["block_tflops"] if gemm else None
        lines += [f"## {backbone} ({Path(path).name}; {gpu or 'no GPU named'})", "",
                  f"per view {view / 1e9:.1f} GFLOP, per 77-token text {text / 1e9:.1f} GFLOP; "
                  f"peak {f'{top:g}' if top else '?'} TFLOP/s (spec), "
                  f"measured bf16 GEMM {f'{measured:.0f}' if measured else '?'} TFLOP/s", "",
                  "| row | kind | img/s | TFLOP/s | of peak | of measured GEMM |", "|---|---|---|---|---|---|"]
        for device, entries in results["devices"].items():
            for entry in entries:
                if entry["row"].startswith("baseline"):
                    continue
                rate = entry["images_per_s_without_data"]
                tflops = rate * image_flops(entry["kind"], view, text) / 1e12
                share = f"{tflops / top:.1%}" if top else ""
                of_gemm = f"{tflops / measured:.1%}" if measured else ""
                lines.append(f"| {entry['row']} ({device}) | {entry['kind']} | {rate:.1f} | {tflops:.1f} | {share} | "
                             f"{of_gemm} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", help="run.py --json files")
    parser.add_argument("--gemm", metavar="OUT", help="measure the bf16 GEMM rate on this GPU and write it here")
    parser.add_argument("--gemm-json", help="a GEMM rate measured before (--gemm OUT)")
    parser.add_argument("--peak", type=float, help="the GPU's peak TFLOP/s (default: the spec sheet's for known GPUs)")
    args = parser.parse_args()
    gemm = None
    if args.gemm:
        gemm = measure_gemm()
        Path(args.gemm).write_text(json.dumps(gemm, indent=2))
        shown = ", ".join(f"{k} {v:.0f}" for k, v in gemm["tflops"].items())
        print(f"bf16 GEMM on {gemm['gpu']}, M = {gemm['tokens']}: {shown} TFLOP/s; "
              f"a block's mix {gemm['block_tflops']:.0f} TFLOP/s")
    elif args.gemm_json and Path(args.gemm_json).is_file():  # a GEMM step that did not finish: no second denominator
        gemm = json.loads(Path(args.gemm_json).read_text())
    if args.results:
        print(report(args.results, args.peak, gemm))
    elif not args.gemm:
        sys.exit("give run.py result files, or --gemm OUT")


if __name__ == "__main__":
    main()
