"""`ipce serve` under concurrent load on loopback, against `ipce predict` on the same images.

    python benchmarks/serve_bench.py [--clients 8] [--requests 200] [--size 512] [--repeats 3] [--json OUT]

Writes a tiny random checkpoint and REQUESTS distinct SIZE x SIZE JPEGs (smooth random pictures,
quality 90) into a temporary folder (not timed), starts `ipce serve --no-page` on a free port,
sends 5 untimed requests, then CLIENTS threads send REQUESTS requests in all, one image each,
every one against the same prompt: latency p50/p95 and requests/s. Then `ipce predict` scores the
same folder with the same checkpoint (its own images/s line). REPEATS rounds of the two, in turns;
the medians are reported. Both commands run with their default settings (batch 16; the server
waits at most 5 ms to fill a batch).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ipce.utils.io import write_json  # noqa: E402
from tests.conftest import random_image, tiny_checkpoint  # noqa: E402

PROMPT = "a red fox standing in fresh snow at dawn"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def start_server(checkpoint: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "ipce", "serve", "--checkpoint", str(checkpoint), "--port", "0",
                             "--no-page", "--device", "cpu", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.search(r"http://([^/]+)/", line)
    if not match:
        proc.kill()
        raise SystemExit(f"ipce serve did not start: {line!r}")
    return proc, f"http://{match.group(1)}"


def load(url: str, files: list[bytes], clients: int) -> tuple[list[float], float, int]:
    """(latencies in s, wall seconds, failed requests) of len(files) requests from `clients` threads."""
    latencies, failed, lock = [], [0], threading.Lock()
    jobs = iter(range(len(files)))

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            while True:
                with lock:
                    i = next(jobs, None)
                if i is None:
                    return
                started = time.perf_counter()
                r = http.post("/api/score", data={"prompt": PROMPT}, files=[("images", (f"{i}.jpg", files[i]))])
                took = time.perf_counter() - started
                with lock:
                    latencies.append(took)
                    failed[0] += r.status_code != 200 or len(r.json().get("scores", [])) != 1

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for _ in [pool.submit(client) for _ in range(clients)]:
            _.result()
    return latencies, time.perf_counter() - started, failed[0]


def _serve_round(url: str, files: list[bytes], clients: int) -> dict:
    latencies, wall, failed = load(url, files, clients)
    ms = np.array(latencies) * 1000
    return {"ok": len(latencies) - failed, "failed": failed, "wall_s": round(wall, 3),
            "requests_per_s": round(len(latencies) / wall, 2), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "max_ms": round(float(ms.max()), 1)}


def _predict_round(checkpoint: Path, images: Path, out: Path) -> dict:
    started = time.perf_counter()
    printed = subprocess.run([sys.executable, "-m", "ipce", "predict", "--checkpoint", str(checkpoint), "--images",
                              str(images), "--prompt", PROMPT, "--out", str(out), "--device", "cpu", "--no-progress"],
                             capture_output=True, text=True, check=True).stdout
    rate = re.search(r"scored (\d+) of \d+ images in ([\d.]+) s \(([\d.]+) images/s\)", printed)
    return {"images": int(rate.group(1)), "scoring_s": float(rate.group(2)), "images_per_s": float(rate.group(3)),
            "command_wall_s": round(time.perf_counter() - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of (serve load, predict); medians")
    parser.add_argument("--json", default=None, help="write every number to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = tiny_checkpoint(tmp / "tiny.safetensors", seed=0)
        images = tmp / "images"
        images.mkdir()
        for i in range(args.requests):
            random_image(args.size, args.size, seed=i).save(images / f"img_{i:04d}.jpg", quality=90)
        files = [p.read_bytes() for p in sorted(images.iterdir())]

        load_before = os.getloadavg()
        proc, url = start_server(checkpoint, [])
        rounds = []
        try:
            for _ in range(200):  # until the model is loaded and answering
                try:
                    if httpx.get(f"{url}/api/health", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            load(url, files[:5], 1)  # warm-up, untimed
            for _ in range(args.repeats):  # turns, so that a change in machine load hits both alike
                rounds.append({"serve": _serve_round(url, files, args.clients),
                               "predict": _predict_round(checkpoint, images, tmp / "p.csv")})
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        load_after = os.getloadavg()

    def median(part: str, key: str) -> float:
        return round(float(np.median([r[part][key] for r in rounds])), 2)

    result = {
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "load_average": load_before, "load_average_end": load_after},
        "settings": {"clients": args.clients, "requests": args.requests, "size": args.size, "repeats": args.repeats,
                     "checkpoint": "tiny", "views": "the checkpoint's (512 px, 15 crops + global)",
                     "server": "ipce serve --no-page (batch 16, max wait 5 ms)",
                     "predict": "ipce predict (batch 16, 2 workers)"},
        "rounds": rounds,
        "median": {"requests_per_s": median("serve", "requests_per_s"), "p50_ms": median("serve", "p50_ms"),
                   "p95_ms": median("serve", "p95_ms"), "predict_images_per_s": median("predict", "images_per_s")},
        "answered": f"{sum(r['serve']['ok'] for r in rounds)} of {args.requests * args.repeats}",
    }
    m = result["median"]
    m["serve_vs_predict"] = round(m["requests_per_s"] / m["predict_images_per_s"], 3)
    print(f"ipce serve, {args.clients} clients, {args.requests} requests, medians of {args.repeats}: "
          f"{m['requests_per_s']} requests/s, latency p50 {m['p50_ms']} ms, p95 {m['p95_ms']} ms; "
          f"answered {result['answered']}")
    print(f"ipce predict on the same {args.requests} images: {m['predict_images_per_s']} images/s; "
          f"serve/predict = {m['serve_vs_predict']}")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
