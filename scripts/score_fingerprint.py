"""A fingerprint of ipce's numbers, to show that a change of code left every score bit-identical.

Trains a tiny model for one epoch on 24 generated images through `ipce train` (one thread, CPU),
scores the images with the trained checkpoint, and scores six of them with the same weights saved as a
bare CLIP state dict (the original code's checkpoint format). Prints one JSON line: the SHA-256 of the
float64 bytes of each score list, and the first scores. Run it on two commits and compare the lines:

    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before python scripts/score_fingerprint.py /tmp/fp-before
    PYTHONPATH=. python scripts/score_fingerprint.py /tmp/fp-after
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread: the same rounding on any core count

import numpy as np  # noqa: E402  (after the thread count is set)
import torch  # noqa: E402
from PIL import Image  # noqa: E402

PROMPT = "a grey picture number 1"


def make_data(folder: Path) -> tuple[Path, list[Path]]:
    """24 noise pictures whose brightness follows their score, and their annotation CSV."""
    rng = np.random.default_rng(7)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = ["image,prompt,mos"]
    for i in range(24):
        level = i % 6
        pixels = np.clip(rng.normal(40 * level, 20, (240, 260, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"gen_{i:03d}.png")
        rows.append(f"gen_{i:03d}.png,a grey picture number {i % 3},{level:.2f}")
    annotations = folder / "scores.csv"
    annotations.write_text("\n".join(rows) + "\n")
    return annotations, sorted(images.iterdir())


def digest(scores) -> str:
    return hashlib.sha256(np.asarray(scores, dtype=np.float64).tobytes()).hexdigest()


def main(work: Path) -> dict:
    import ipce
    from ipce.cli import main as cli

    torch.set_num_threads(1)
    annotations, images = make_data(work)
    out = work / "run"
    code = cli(["train", "--annotations", str(annotations), "--images", str(images[0].parent), "--backbone", "tiny",
                "--resize", "224", "--epochs", "1", "--batch-size", "4", "--lr", "1e-3", "--train-patches", "1",
                "--eval-patches", "2", "--splits", "1", "--workers", "0", "--device", "cpu", "--no-progress",
                "--out", str(out)])
    if code != 0:
        raise SystemExit(f"ipce train exited {code}")
    checkpoint = next(p for p in sorted((out / "split1").iterdir()) if p.name.startswith("best"))
    trained = ipce.load_scorer(str(checkpoint)).score(images, PROMPT)
    bare_file = work / "bare.pt"
    torch.save(ipce.load_scorer(str(checkpoint)).members[0].model.clip.state_dict(), bare_file)
    bare = ipce.load_scorer(str(bare_file), resize=224, patches=3).score(images[:6], PROMPT)
    return {"trained": digest(trained), "bare": digest(bare), "first": [float(trained[0]), float(bare[0])]}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python scripts/score_fingerprint.py WORK_DIR")
    print(json.dumps(main(Path(sys.argv[1]))))
