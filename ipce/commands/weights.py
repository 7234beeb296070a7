"""`ipce weights list` / `ipce weights fetch NAME`: the pretrained CLIP files ipce knows, where they are
looked for, and the one explicit download (ipce never downloads on its own)."""
from __future__ import annotations

import argparse


def add_weights_arguments(p: argparse.ArgumentParser) -> None:
    from ipce.commands.flags import HelpFormatter, add_progress_argument

    actions = p.add_subparsers(dest="action", required=True, metavar="{list,fetch}",
                               help="list: what is known and present; fetch NAME: download one")
    actions.add_parser("list", help="the known backbones, where each is looked for and whether it is present",
                       description="The known backbones, where each is looked for and whether it is present.",
                       formatter_class=HelpFormatter)
    fetch = actions.add_parser("fetch", help="download one of OpenAI's files into ~/.cache/clip/ (SHA-256 checked)",
                               description="Download one of OpenAI's CLIP files from the address clip.load uses, "
                                           "resuming a partial download, and check its SHA-256.",
                               formatter_class=HelpFormatter)
    fetch.add_argument("name", help="a backbone name from `ipce weights list`, e.g. ViT-B-32")
    fetch.add_argument("--dir", default=None, help="folder to put the file in (default: ~/.cache/clip)")
    fetch.add_argument("--url", default=None, help="download from this mirror instead (the SHA-256 is still checked)")
    add_progress_argument(fetch)


def weights_command(args: argparse.Namespace) -> int:
    from ipce.models.weights import OPENAI_WEIGHTS, fetch, locate, weight_dirs

    if args.action == "fetch":
        path = fetch(args.name, folder=args.dir, url=args.url, progress=not args.no_progress)
        print(f"{args.name}: {path} (SHA-256 checked)")
        return 0
    for name, entry in OPENAI_WEIGHTS.items():
        found = locate(name)
        state = f"present: {found}" if found else f"missing: `ipce weights fetch {name}` ({entry.url})"
        print(f"{name:<14} {state}")
    print("looked for, in order: " + ", ".join(str(d) for d in weight_dirs())
          + " (each as <name>.pt as OpenAI names it, <name>.safetensors, <name>.bin)")
    return 0
