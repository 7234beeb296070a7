"""Time `check_records` (what `ipce check-data` does) on a generated AGIQA-3K-layout dataset.

    python benchmarks/check_data_bench.py [--n 3000] [--size 64] [--workers 2]

Builds N noise JPEGs of SIZE x SIZE plus data.csv in a temporary folder (not timed), reads the
annotations, then times the full decode of every image and the prompt-length count.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ipce.datasets.checks import check_records, count_long_prompts  # noqa: E402
from ipce.datasets.sources import load_dataset  # noqa: E402
from tests.datagen import build_agiqa3k_like  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        build_agiqa3k_like(tmp, args.n, size=args.size)
        built = time.perf_counter() - started

        started = time.perf_counter()
        records = load_dataset("agiqa3k", tmp).usable()
        read = time.perf_counter() - started

        count_long_prompts(["warm up the tokenizer"])  # import open_clip outside the timing
        started = time.perf_counter()
        report = check_records(records, workers=args.workers, progress=True)
        checked = time.perf_counter() - started
        assert report.ok and report.records == args.n, report.by_kind()

    print(f"built {args.n} {args.size}x{args.size} JPEGs in {built:.2f} s; read annotations in {read:.3f} s")
    print(f"check_records ({args.workers} workers): {checked:.2f} s for {args.n} images "
          f"= {args.n / checked:.0f} images/s")


if __name__ == "__main__":
    main()
