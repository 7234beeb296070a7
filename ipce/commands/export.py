"""`ipce export CHECKPOINT --out DIR [--format safetensors|onnx]`: a model folder to share, with its card."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="an ipce checkpoint (a run's <run>/split<k>/best.safetensors) or a folder of `ipce export`")
    p.add_argument("--out", required=True, metavar="DIR", help="the model folder to write (new or empty)")
    p.add_argument("--format", choices=("safetensors", "onnx"), default="safetensors",
                   help="safetensors: model.safetensors + config.json, for ipce and PyTorch; onnx: the image and "
                        "text encoders as ONNX graphs + config.json, for onnxruntime (needs ipce[onnx])")
    p.add_argument("--summary", default=None, metavar="FILE",
                   help="the run's summary.json for the model card (default: the one beside the checkpoint, "
                        "in its folder or the one above)")
    p.add_argument("--no-summary", action="store_true", help="write the card without a run summary")


def export_command(args: argparse.Namespace) -> int:
    from ipce.engine.export import export_model

    config = export_model(args.checkpoint, args.out, args.format, summary=args.summary,
                          use_summary=not args.no_summary)
    files = sorted(p.name for p in Path(args.out).iterdir())
    print(f"wrote {args.out}: {', '.join(files)}")
    summary = "the run's summary" if config.get("run_summary") else "no run summary (the checkpoint's own metrics)"
    print(f"model card: {args.out}/README.md, from {summary}")
    print(f"upload: hf upload OWNER/NAME {args.out} .   (the hub's client, after `hf auth login`)")
    return 0
