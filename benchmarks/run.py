"""Evaluation and training throughput, where the time goes, and peak memory (benchmarks/README.md).

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--backbone ViT-B-32] [--repeats N]
                             [--json OUT] [--compile | --no-compile] [--rows REGEX]

Random weights (`random:<backbone>`), the paper's settings: 512x512 JPEG images, 15 crops + the
global view in evaluation, 8 random crops + the global view in training, batch 16, distinct
prompts of 10-40 words. Each row runs once as a warm-up, then `--repeats` times; rows take
turns (repeat 1 of every row, then repeat 2, ...) so that a change in machine load hits every
row alike; the table gives medians. `--quick` is a smoke run (smaller batches, no compile).
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import dataclasses
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from ipce.models.views import ViewConfig, make_views  # noqa: E402
from ipce.models import correspondence, reference  # noqa: E402
from ipce.utils.precision import autocast  # noqa: E402

# Distinct prompts of 10-40 words, in the style of AGIQA-3K / AIGCIQA2023 prompts.
PROMPTS = [
    "a red fox sitting in a snowy birch forest at dawn, soft light, highly detailed photograph",
    "portrait of an elderly fisherman with a weathered face and a knitted blue cap, oil painting",
    "a futuristic city skyline at night with flying cars, neon signs reflected in wet streets, "
    "cinematic lighting, ultra wide angle, artstation trending",
    "two cats sleeping on a windowsill next to a pot of basil",
    "a bowl of ramen with a soft boiled egg, spring onions and chashu pork on a wooden table, "
    "food photography, shallow depth of field",
    "an astronaut riding a horse across the surface of mars, digital art",
    "a cozy library with tall wooden shelves, a fireplace, leather armchairs and a sleeping dog "
    "in front of the fire, warm colours, watercolor illustration",
    "a lighthouse on a rocky cliff during a violent storm with huge waves crashing below",
    "children flying kites on a green hill under a bright blue sky with scattered white clouds",
    "a steampunk mechanical owl made of brass gears and copper plates perched on an old book, "
    "intricate details, studio lighting, 8k render",
    "a medieval castle surrounded by a moat, autumn trees and a misty mountain range behind it",
    "close-up of a hummingbird drinking nectar from a purple flower",
    "a crowded market street in marrakech with colourful spices, lanterns, carpets and people "
    "bargaining with merchants, vivid afternoon sunlight, documentary photo",
    "an abstract sculpture of intertwined glass ribbons in a white gallery",
    "a small wooden boat floating on a calm turquoise lake surrounded by snow capped mountains "
    "and pine forests, reflections on the water, early morning fog, national geographic style",
    "a robot chef cooking pancakes in a bright modern kitchen, cartoon style",
    "an old man playing chess against a young girl in a park",
    "a vintage red bicycle leaning against a yellow wall covered with ivy and flower pots",
    "a giant whale swimming through clouds above a sleeping village, surreal fantasy painting, "
    "soft pastel colours, dreamy atmosphere, highly detailed, by a famous illustrator",
    "a plate of sushi arranged in the shape of a smiling face",
    "knight in shining armour standing in front of a dragon on a burning battlefield, "
    "epic fantasy concept art",
    "a desert highway at sunset with a lonely gas station and a parked vintage car",
    "a teddy bear reading a newspaper on a park bench",
    "an underwater coral reef with tropical fish, sea turtles, jellyfish and rays of sunlight "
    "coming through the surface of the water, vibrant colours, photorealistic render",
]


# --------------------------------------------------------------------------------------- setup
def write_result(path: str | None, result: dict) -> None:
    """The benchmark's settings and numbers as indented JSON at `path` (nothing without one)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    flags = ""
    with contextlib.suppress(OSError):
        flags = next((ln for ln in open("/proc/cpuinfo", encoding="utf-8") if ln.startswith("flags")), "")
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": " avx512_bf16" in flags,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.cuda.get_device_name()
    return info


def make_jpegs(count: int, width: int, height: int, seed: int = 0) -> list[bytes]:
    """Smooth random pictures with some grain, JPEG quality 90 (decode cost like real images)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, size=(height // 32, width // 32, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, size=smooth.shape, dtype=np.int16)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: /proc/self/clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_mb(field_name: str = "VmRSS") -> float:
    with contextlib.suppress(OSError):
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak since start (fallback)


# --------------------------------------------------------------------------------------- timing
class Clock:
    """Named time sections of one run; CUDA is synchronized at each boundary."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sections: dict[str, float] = {}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def section(self, name: str):
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.sections[name] = self.sections.get(name, 0.0) + time.perf_counter() - start

    def wrap(self, fn: Callable, name: str, to_device: bool = False) -> Callable:
        def timed(*args, **kwargs):
            if to_device:  # the reference keeps its inputs on the CPU
                args = tuple(a.to(self.device) if isinstance(a, torch.Tensor) else a for a in args)
            with self.section(name):
                return fn(*args, **kwargs)
        return timed


@contextlib.contextmanager
def patched(obj, name: str, value):
    had = name in vars(obj)
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


@dataclass
class Row:
    name: str
    kind: str  # eval | floor | train
    run: Callable  # (images: list[bytes], prompts, clock) -> scores or None
    precision: str = "fp32"
    note: str = ""
    totals: list[float] = field(default_factory=list)
    sections: list[dict] = field(default_factory=list)
    scores: torch.Tensor | None = None
    peak_rss: float = 0.0
    peak_cuda: float = 0.0
    warmup_s: float = 0.0
    prepare: Callable | None = None  # (images) -> None, run before each timed run, untimed
    batches: int = 1  # batches of the row's batch size one run scores (img/s counts them all)


# --------------------------------------------------------------------------------------- rows
BASELINE = "baseline: reference.original_scores"  # the row every other eval row is compared with
BASELINE_BEFORE = "baseline: reference.seed_scores"  # its label in results/*.json written before the rename
@contextlib.contextmanager
def open_clip_as_is(clip):
    """open_clip's own MLPs (QuickGELU unfused) for the duration; ours again afterwards."""
    fuse_quick_gelu = getattr(correspondence, "fuse_quick_gelu", None)
    if fuse_quick_gelu is None:  # a tree without the fused MLP: nothing to undo
        yield
        return
    fuse_quick_gelu(clip, enabled=False)
    try:
        yield
    finally:
        fuse_quick_gelu(clip, enabled=True)


def eval_views(images: list[bytes], config: ViewConfig, device: torch.device):
    from ipce.models.speed import stack_pinned, to_device

    pairs = [make_views(decode(data), config) for data in images]
    stack = stack_pinned if device.type == "cuda" else torch.stack
    crops, global_view = stack([c for c, _ in pairs]), stack([g for _, g in pairs])
    return to_device(crops, device), to_device(global_view, device)


def baseline_row(clip, device: torch.device) -> Row:
    def run(images, prompts, clock):
        with clock.section("data"):
            pil = [decode(data) for data in images]
        with open_clip_as_is(clip), patched(reference, "original_views", clock.wrap(reference.original_views, "data")), \
                patched(clip, "encode_text", clock.wrap(clip.encode_text, "text", to_device=True)), \
                patched(clip, "encode_image", clock.wrap(clip.encode_image, "image", to_device=True)):
            return reference.original_scores(clip, pil, prompts, resize=512, patches=15).float().cpu()
    return Row(BASELINE, "eval", run,
               note="all windows copied, 77-token texts, batch x batch similarity")


def ours_row(name: str, model, device: torch.device, precision: str = "fp32", cache: str = "cold",
             cut_padding: bool = True, fused: bool = True, note: str = "", use_autocast: bool = True) -> Row:
    """`use_autocast` False: a model already cast to the low precision runs without autocast."""
    config = ViewConfig(resize=512, patches=15)
    amp = (lambda: autocast(device, precision)) if use_autocast else contextlib.nullcontext

    def run(images, prompts, clock):
        if cache == "cold":
            model.text_cache.clear()
        elif cache == "warm":
            with torch.no_grad(), amp():
                model.text_features(prompts, cut_padding)
        with clock.section("data"):
            crops, global_view = eval_views(images, config, device)
        original = model.text_features
        text = clock.wrap(lambda p: original(p, cut_padding), "text")
        with patched(model, "text_features", text), \
                patched(model.clip, "encode_image", clock.wrap(model.clip.encode_image, "image")), \
                torch.no_grad(), amp(), \
                (contextlib.nullcontext() if fused else open_clip_as_is(model.clip)):
            scores = model(crops, global_view, prompts)
        return scores.float().cpu()
    return Row(name, "eval", run, precision, note)


def floor_row(name: str, model, device: torch.device, precision: str, fused: bool = True,
              use_autocast: bool = True) -> Row:
    """The image encoder alone on the same views, called as the scorer calls it."""
    config = ViewConfig(resize=512, patches=15)
    prepared: dict[int, torch.Tensor] = {}
    dtype = model.clip.visual.conv1.weight.dtype  # a model cast to bf16 takes bf16 views

    def prepare(images):
        if len(images) not in prepared:
            crops, global_view = eval_views(images, config, device)
            prepared[len(images)] = torch.cat([crops, global_view[:, None]], dim=1).flatten(0, 1).to(dtype)

    def run(images, prompts, clock):
        prepare(images)
        views = prepared[len(images)]
        chunk = getattr(model, "image_chunk", None)
        with clock.section("image"), torch.no_grad(), \
                (autocast(device, precision) if use_autocast else contextlib.nullcontext()), \
                (contextlib.nullcontext() if fused else open_clip_as_is(model.clip)):
            parts = views.split(chunk) if chunk and views.shape[0] > chunk else [views]
            for part in parts:
                model.clip.encode_image(part)
        return None
    return Row(name, "floor", run, precision, "clip.encode_image only, views prepared", prepare=prepare)


def loader_row(name: str, model, device: torch.device, workers: int = 2, batches: int = 3,
               precision: str = "fp32") -> Row:
    """Ours fed by ipce's own DataLoader, as `ipce predict` runs: worker processes read, decode
    and crop the next batches while the model scores this one. `batches` batches of image files
    (the batch's JPEGs written again under new names), the text cache cleared before each batch
    (every prompt new); 'data' is the time spent waiting for the loader. Returns the first
    batch's scores, which are the baseline's images and prompts."""
    from ipce.datasets.loader import ViewDataset, make_loader
    from ipce.datasets.sources import Record
    from ipce.models.speed import to_device

    folder = Path(tempfile.mkdtemp(prefix="ipce-bench-"))
    atexit.register(shutil.rmtree, folder, True)
    records: dict[int, list[Record]] = {}

    def prepare(images):  # image files on disk, once per batch size (untimed)
        if len(images) not in records:
            records[len(images)] = []
            for i in range(batches * len(images)):
                path = folder / f"{len(images)}-{i}.jpg"
                path.write_bytes(images[i % len(images)])
                records[len(images)].append(Record(image=path, prompt="", target=None, name=path.name))

    def run(images, prompts, clock):
        ours = [dataclasses.replace(r, prompt=prompts[i % len(prompts)]) for i, r in enumerate(records[len(images)])]
        dataset = ViewDataset(ours, ViewConfig(resize=512, patches=15))
        loader = iter(make_loader(dataset, batch_size=len(images), shuffle=False, workers=workers, device=device))
        first = None
        with patched(model, "text_features", clock.wrap(model.text_features, "text")), \
                patched(model.clip, "encode_image", clock.wrap(model.clip.encode_image, "image")), \
                torch.no_grad(), autocast(device, precision):
            for _ in range(batches):
                with clock.section("data"):
                    batch = next(loader)
                model.text_cache.clear()
                scores = model(to_device(batch.crops, device), to_device(batch.global_view, device), batch.prompts)
                first = scores.float().cpu() if first is None else first
        return first
    return Row(name, "eval", run, precision, f"{batches} batches, {workers} loader workers, every prompt new",
               prepare=prepare, batches=batches)


_OPTIMIZERS: dict[int, torch.optim.Optimizer] = {}


def train_row(name: str, model, device: torch.device, precision: str = "fp32", micro: int = 1,
              fused: bool = True, note: str = "") -> Row:
    config = ViewConfig(resize=512, patches=8, train=True, flip=True)
    if id(model) not in _OPTIMIZERS:  # rows on the same model share one AdamW (and its state)
        params = [p for p in model.parameters() if p.requires_grad]
        _OPTIMIZERS[id(model)] = torch.optim.AdamW(params, lr=5e-6, weight_decay=1e-3)
    optimizer = _OPTIMIZERS[id(model)]
    step = [0]

    def run(images, prompts, clock):
        from ipce.models.speed import stack_pinned, to_device

        model.train()
        step[0] += 1
        with clock.section("data"):
            pairs = [make_views(decode(data), config, torch.Generator().manual_seed(step[0] * 1000 + i))
                     for i, data in enumerate(images)]
            stack = stack_pinned if device.type == "cuda" else torch.stack
            crops = to_device(stack([c for c, _ in pairs]), device)
            global_view = to_device(stack([g for _, g in pairs]), device)
            targets = torch.linspace(0.5, 4.5, len(images), device=device)
        parts = max(1, min(micro, len(images)))
        with contextlib.nullcontext() if fused else open_clip_as_is(model.clip):
            step_parts(crops, global_view, targets, images, prompts, parts, clock)
        with clock.section("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return None

    def step_parts(crops, global_view, targets, images, prompts, parts, clock):
        for part in range(parts):
            index = list(range(len(images)))[part::parts]
            with patched(model, "text_features", clock.wrap(model.text_features, "text")), \
                    patched(model.clip, "encode_image", clock.wrap(model.clip.encode_image, "image")), \
                    autocast(device, precision):
                scores = model(crops[index], global_view[index], [prompts[i] for i in index])
            loss = F.l1_loss(scores.float(), targets[index]) * len(index) / len(images)
            with clock.section("backward"):
                loss.backward()
    return Row(name, "train", run, precision, note)


# ----------------------------------------------------------------------------- the GPU levers
# "lean" rows time the model alone, views already on the device and nothing synchronized inside a
# run (the rows above synchronize CUDA around every section they time): what a GPU does when the
# loader keeps up. Each lever is the option ipce has (ipce/models/speed.py, --fused-adamw,
# --log-every), so the rows measure the flags, not a copy of them.

def lean_eval_row(name: str, model, device: torch.device, precision: str, use_autocast: bool = True,
                  note: str = "") -> Row:
    """Evaluation of prepared views (untimed), every prompt new (the text cache cleared)."""
    config = ViewConfig(resize=512, patches=15)
    prepared: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def prepare(images):
        if len(images) not in prepared:
            prepared[len(images)] = eval_views(images, config, device)

    def run(images, prompts, clock):
        crops, global_view = prepared[len(images)]
        model.text_cache.clear()
        with torch.no_grad(), (autocast(device, precision) if use_autocast else contextlib.nullcontext()):
            scores = model(crops, global_view, prompts)
        return scores.float().cpu()
    return Row(name, "eval", run, precision, note or "views prepared on the device, no sync inside a run",
               prepare=prepare)


def lean_train_row(name: str, model, device: torch.device, precision: str, fused_adamw: bool = False,
                   loss_on_device: bool = False, note: str = "") -> Row:
    """Training steps on prepared views: forward, L1 loss, backward, AdamW (fused or not); the loss
    read on the host every step (as `ipce train --log-every 1`) or summed on the device."""
    from ipce.config import make_config
    from ipce.engine.train import make_optimizer

    config = ViewConfig(resize=512, patches=8, train=True, flip=True)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad],
                               make_config(lr=5e-6, weight_decay=1e-3, fused_adamw=fused_adamw))
    prepared: dict[int, tuple] = {}

    def prepare(images):
        if len(images) not in prepared:
            pairs = [make_views(decode(data), config, torch.Generator().manual_seed(i)) for i, data in enumerate(images)]
            prepared[len(images)] = (torch.stack([c for c, _ in pairs]).to(device),
                                     torch.stack([g for _, g in pairs]).to(device),
                                     torch.linspace(0.5, 4.5, len(images), device=device))

    def run(images, prompts, clock):
        crops, global_view, targets = prepared[len(images)]
        model.train()
        with autocast(device, precision):
            scores = model(crops, global_view, prompts)
        loss = F.l1_loss(scores.float(), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total = loss.detach().double() if loss_on_device else loss.item()
        del total
        return None
    return Row(name, "train", run, precision, note or "views prepared on the device", prepare=prepare)


def lever_rows(model, device: torch.device, low: str, phase: str) -> list[Row]:
    """The rows of `--levers`: each GPU option of ipce beside the path it replaces."""
    from ipce.models.attention import use_sdpa
    from ipce.models.speed import compile_blocks, use_bf16_image_weights

    def variant(attention: str = "mha", bf16_weights: bool = False):
        other = copy.deepcopy(model)
        if attention == "sdpa":
            use_sdpa(other.clip)
        if bf16_weights:
            use_bf16_image_weights(other)
        return other
    if phase == "eval":
        weights, weights_sdpa = variant(bf16_weights=True), variant("sdpa", bf16_weights=True)
        if device.type == "cuda":
            weights_sdpa.image_chunk = None  # the floor row as the scorer encodes on CUDA: in one call
        return [lean_eval_row(f"lean: ours {low} autocast", model, device, low),
                lean_eval_row(f"lean: ours {low} autocast, sdpa", variant("sdpa"), device, low),
                lean_eval_row("lean: ours bf16 image weights", weights, device, "bf16", use_autocast=False,
                              note="--bf16-weights: image tower bf16, texts fp32 and cached"),
                lean_eval_row("lean: ours bf16 image weights, sdpa", weights_sdpa, device, "bf16", use_autocast=False),
                floor_row("lean: image encoder alone bf16 weights, sdpa", weights_sdpa, device, "bf16",
                          use_autocast=False)]
    if phase == "train":
        return [lean_train_row(f"lean train: ours {low} autocast", model, device, low),
                lean_train_row(f"lean train: ours {low} autocast, sdpa, fused AdamW, loss on device",
                               variant("sdpa"), device, low, fused_adamw=True, loss_on_device=True)]
    compiled, train_compiled = variant("sdpa", bf16_weights=True), variant("sdpa")
    compile_blocks(compiled)
    compile_blocks(train_compiled)
    return [lean_eval_row("lean: ours bf16 image weights, sdpa + regional compile", compiled, device, "bf16",
                          use_autocast=False),
            lean_train_row(f"lean train: ours {low} autocast, sdpa, fused AdamW + regional compile", train_compiled,
                           device, low, fused_adamw=True, loss_on_device=True)]


# --------------------------------------------------------------------------------------- running
def run_once(row: Row, images, prompts, device: torch.device) -> tuple[float, dict, torch.Tensor | None]:
    if row.prepare is not None:
        row.prepare(images)
    clock = Clock(device)
    clock.sync()
    start = time.perf_counter()
    scores = row.run(images, prompts, clock)
    clock.sync()
    return time.perf_counter() - start, clock.sections, scores


def measure(rows: list[Row], eval_images, train_images, prompts, device, repeats: int, log) -> None:
    def inputs(row, warm=False):
        images = train_images if row.kind == "train" else eval_images
        if warm:
            images = images[:1]
        return images, prompts[:len(images)]

    for row in rows:  # warm-up: kernels, allocator, lazy imports (compiled rows: see warm_compiled)
        if row.warmup_s:  # compiled at the full batch already; a smaller batch would recompile
            continue
        started = time.perf_counter()
        # CUDA: the full batch, so that cuDNN's autotuning and the caching allocator meet the timed
        # shapes now (after a one-image warm-up the first timed repeat runs ~2x slow on an H200)
        run_once(row, *inputs(row, warm=device.type != "cuda"), device)
        row.warmup_s += time.perf_counter() - started
        log(f"  warm-up {row.name}: {row.warmup_s:.1f} s")
    for repeat in range(repeats):
        for row in rows:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            before = rss_mb()
            reset_peak_rss()
            total, sections, scores = run_once(row, *inputs(row), device)
            row.peak_rss = max(row.peak_rss, rss_mb("VmHWM") - before)
            if device.type == "cuda":
                row.peak_cuda = max(row.peak_cuda, torch.cuda.max_memory_allocated(device) / 2**20)
            row.totals.append(total)
            row.sections.append(sections)
            if scores is not None:
                row.scores = scores
            log(f"  repeat {repeat + 1}/{repeats} {row.name}: {total:.2f} s")


def median_sections(row: Row) -> dict[str, float]:
    names = sorted({k for s in row.sections for k in s})
    return {k: statistics.median(s.get(k, 0.0) for s in row.sections) for k in names}


def summarize(rows: list[Row], batch: int, train_batch: int) -> list[dict]:
    base = next((r for r in rows if r.name.startswith("baseline")), None)
    base_t = statistics.median(base.totals) if base else None
    ours32 = next((r for r in rows if r.name == "ours fp32"), None)
    out = []
    for row in rows:
        t = statistics.median(row.totals)
        n, views = (train_batch, 9) if row.kind == "train" else (batch * row.batches, 16)
        parts = median_sections(row)
        known = sum(parts.values())
        parts["rest"] = max(t - known, 0.0)
        entry = {"row": row.name, "kind": row.kind, "precision": row.precision, "seconds": t,
                 "images_per_s": n / t, "views_per_s": n * views / t,
                 "images_per_s_without_data": n / max(t - parts.get("data", 0.0), 1e-9),
                 "seconds_all": row.totals, "split": {k: v / t for k, v in parts.items()},
                 "peak_rss_mb": row.peak_rss, "peak_cuda_mb": row.peak_cuda, "warmup_s": row.warmup_s,
                 "note": row.note}
        if row.kind != "train" and base_t:
            entry["speedup"] = base_t * row.batches / t
        if row.scores is not None and base is not None and base.scores is not None:
            if row.precision == "fp32":
                entry["max_abs_diff_vs_baseline"] = float((row.scores - base.scores).abs().max())
            elif ours32 is not None and ours32.scores is not None:
                entry["mad_vs_fp32"] = float((row.scores - ours32.scores).abs().mean())
        out.append(entry)
    return out


def table(entries: list[dict], kind: str, cuda: bool) -> str:
    cols = {"eval": ["data", "image", "text", "rest"],
            "train": ["data", "image", "text", "backward", "optimizer", "rest"]}[kind]
    head = ["row", "img/s", "img/s w/o data", "views/s"] + (["x baseline"] if kind == "eval" else []) \
        + [f"{c} %" for c in cols] + ["+peak RSS MB"] + (["CUDA peak MB"] if cuda else []) \
        + (["scores"] if kind == "eval" else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        if (e["kind"] == "train") != (kind == "train"):
            continue
        cells = [e["row"], f"{e['images_per_s']:.2f}", f"{e['images_per_s_without_data']:.2f}",
                 f"{e['views_per_s']:.1f}"]
        if kind == "eval":
            cells.append(f"{e['speedup']:.2f}" if "speedup" in e else "")
        cells += [f"{100 * e['split'].get(c, 0.0):.0f}" for c in cols]
        cells.append(f"{e['peak_rss_mb']:.0f}")
        if cuda:
            cells.append(f"{e['peak_cuda_mb']:.0f}")
        if kind == "eval":
            if "max_abs_diff_vs_baseline" in e:
                cells.append(f"max abs diff {e['max_abs_diff_vs_baseline']:.1e}")
            elif "mad_vs_fp32" in e:
                cells.append(f"MAD vs fp32 {e['mad_vs_fp32']:.4f}")
            else:
                cells.append("")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(entries: list[dict]) -> list[str]:
    by = {e["row"]: e for e in entries}
    base, ours, floor = by.get(BASELINE) or by.get(BASELINE_BEFORE), by.get("ours fp32"), \
        by.get("image encoder alone fp32")
    bf16 = by.get("ours bf16 autocast")
    loaded = by.get("ours fp32, DataLoader 2 workers")
    out = []
    if loaded and floor:  # the floor's img/s against the loader-fed scorer's: data hidden by the workers
        ratio = floor["images_per_s"] / loaded["images_per_s"]
        out.append(f"fp32 evaluation fed by the DataLoader / image encoder alone: {ratio:.3f} (target <= 1.10: "
                   f"{'met' if ratio <= 1.10 else 'NOT met'}; waiting for data {100 * loaded['split']['data']:.0f} %)")
    if ours and floor:
        ratio = ours["seconds"] / floor["seconds"]
        out.append(f"fp32 evaluation / image encoder alone: {ratio:.3f} (target <= 1.10: "
                   f"{'met' if ratio <= 1.10 else 'NOT met'})")
    if ours and base:
        out.append(f"fp32 evaluation vs baseline: {ours['speedup']:.2f}x (target >= 1.2: "
                   f"{'met' if ours['speedup'] >= 1.2 else 'NOT met'}), max abs score diff "
                   f"{ours['max_abs_diff_vs_baseline']:.1e} (target <= 1e-4: "
                   f"{'met' if ours['max_abs_diff_vs_baseline'] <= 1e-4 else 'NOT met'})")
    if bf16 and base:
        out.append(f"bf16 evaluation vs baseline: {bf16['speedup']:.2f}x (target >= 2.5: "
                   f"{'met' if bf16['speedup'] >= 2.5 else 'NOT met'}), MAD vs fp32 "
                   f"{bf16.get('mad_vs_fp32', float('nan')):.4f} (target <= 0.02: "
                   f"{'met' if bf16.get('mad_vs_fp32', 1) <= 0.02 else 'NOT met'})")
    return out


# --------------------------------------------------------------------------------------- memory
def loader_memory_child(method: str) -> dict:
    """Peak memory of making one 1024x768 sample's 15 crops + global view (fresh process)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._pytree import tree_flatten

    class LiveTensorBytes(TorchDispatchMode):
        """Counts the storages that torch ops allocate, live at each op; keeps the peak."""

        def __init__(self):
            super().__init__()
            self.live: dict[int, tuple[StorageWeakRef, int]] = {}
            self.current = self.peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
                self.current -= self.live.pop(key)[1]
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    storage = t.untyped_storage()
                    key = storage.data_ptr()
                    if key and key not in self.live:
                        self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                        self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            return out

    torch.set_num_threads(1)
    data = make_jpegs(1, 1024, 768, seed=3)[0]
    views = (lambda im: make_views(im, ViewConfig(resize=768, patches=15))) if method == "ours" \
        else (lambda im: reference.original_views(im, 768, 15))
    views(decode(data))  # warm up lazy imports and the allocator
    image = decode(data)
    before = rss_mb()
    reset_peak_rss()
    started = time.perf_counter()
    crops, global_view = views(image)
    seconds = time.perf_counter() - started
    rss_peak = rss_mb("VmHWM") - before
    del crops, global_view
    with LiveTensorBytes() as counter:
        crops, global_view = views(image)
    return {"method": method, "rss_peak_mb": rss_peak, "tensor_peak_mb": counter.peak / 2**20,
            "output_mb": (crops.nbytes + global_view.nbytes) / 2**20, "seconds": seconds}


def loader_memory() -> list[dict]:
    results = []
    for method in ("ours", "original"):
        proc = subprocess.run([sys.executable, __file__, "--loader-memory-child", method],
                              capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def memory_table(results: list[dict]) -> str:
    names = {"ours": "ours: make_views (selected crops only)",
             "original": "original code: all windows copied (reference.all_windows)"}
    lines = ["| one 1024x768 sample, 15 crops + global | peak RSS increase MB | peak live tensor MB | output MB | ms |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {names[r['method']]} | {r['rss_peak_mb']:.1f} | {r['tensor_peak_mb']:.1f} | "
                     f"{r['output_mb']:.1f} | {1000 * r['seconds']:.1f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- main
def run_phase(args, device: str, phase: str) -> list[dict]:
    """One phase in a fresh Python process (see build_rows); its progress goes to our stderr."""
    argv = [sys.executable, __file__, "--phase", phase, "--device", device, "--backbone", args.backbone,
            "--repeats", str(args.repeats), "--batch", str(args.batch), "--train-batch", str(args.train_batch),
            "--logit-scale", str(args.logit_scale), "--low", args.low]
    for flag, value in (("--threads", args.threads), ("--image-chunk", args.image_chunk), ("--rows", args.rows)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--quick"] * args.quick + ["--quiet"] * args.quiet + ["--levers"] * args.levers
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark phase {phase} on {device} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def build_rows(args, device: torch.device, log, phase: str) -> list[Row]:
    """The rows of one phase: 'eval', 'train' or 'compile' (each phase runs in its own process:
    training leaves the allocator with gigabytes of free heap that later rows would reuse, and
    compiled code lives on, so the phases do not see each other's state)."""
    from ipce.models.backbone import load_backbone
    from ipce.models.correspondence import CorrespondenceScorer
    from ipce.models.speed import compile_towers

    name = args.backbone if args.backbone == "tiny" or ":" in args.backbone else f"random:{args.backbone}"
    torch.manual_seed(0)
    clip, _, _ = load_backbone(name)
    with torch.no_grad():  # trained CLIP models end at logit scale 100: scores spread as in real use
        clip.logit_scale.fill_(float(np.log(args.logit_scale)))
    clip = clip.to(device).eval()
    model = CorrespondenceScorer(clip).to(device).eval()  # fuses the QuickGELU MLPs in place
    if args.image_chunk is not None:
        model.image_chunk = args.image_chunk or None
    low = args.low
    one_call = _variant(model, image_chunk=None)
    rows = [baseline_row(clip, device),
            ours_row("ours fp32", model, device, note="every prompt new: the text cache does not help"),
            ours_row("ours fp32, texts on the calling thread", _variant(model, overlap_text=False), device,
                     note="overlap_text False: the text tower after the image tower, not beside it"),
            ours_row("ours fp32, text cache warm", model, device, cache="warm",
                     note="prompts seen before (datasets repeat prompts: AGIQA-3K has ~10 images per prompt)"),
            ours_row("ours fp32, no padding cut", model, device, cut_padding=False,
                     note="77-token texts (grouping needs the cut too)"),
            ours_row("ours fp32, no length grouping", _variant(model, group_texts=False), device,
                     note="one text batch cut at its longest prompt"),
            ours_row("ours fp32, views in one call", one_call, device, note="image_chunk None"),
            ours_row("ours fp32, QuickGELU unfused", model, device, note="open_clip's MLP as is", fused=False),
            floor_row("image encoder alone fp32", model, device, "fp32"),
            floor_row("image encoder alone fp32, open_clip as is", one_call, device, "fp32", fused=False),
            loader_row("ours fp32, DataLoader 2 workers", model, device),
            ours_row(f"ours {low} autocast", model, device, precision=low,
                     note="both towers under autocast, similarities in fp32 (the default)"),
            loader_row(f"ours {low} autocast, DataLoader 2 workers", model, device, precision=low),
            ours_row(f"ours {low} autocast, texts fp32", _variant(model, text_autocast=False), device,
                     precision=low, note="text_autocast False"),
            floor_row(f"image encoder alone {low}", model, device, low),
            floor_row(f"image encoder alone {low}, open_clip as is", one_call, device, low, fused=False)]
    if phase == "eval":  # weights cast to the low precision instead of autocast (copies: eval phase only)
        low_dtype = torch.bfloat16 if low == "bf16" else torch.float16
        low_model = copy.deepcopy(model).to(low_dtype)
        low_image_model = copy.deepcopy(model)
        low_image_model.clip.visual.to(low_dtype)
        rows += [ours_row(f"ours {low} weights", low_model, device, precision=low, use_autocast=False,
                          note="the whole scorer cast to the low precision, no autocast"),
                 ours_row(f"ours {low} image weights, texts fp32", low_image_model, device, precision=low,
                          use_autocast=False, note="image tower cast, text tower fp32, no autocast"),
                 floor_row(f"image encoder alone {low} weights", low_model, device, low, use_autocast=False)]
    if not hasattr(correspondence, "fuse_quick_gelu"):  # a tree without the fused MLP: nothing to compare
        rows = [r for r in rows if "unfused" not in r.name and "open_clip as is" not in r.name]
    if args.quick:
        rows = [r for r in rows if not any(k in r.name for k in ("grouping", "texts fp32", "weights", "one call",
                                                                   "unfused", f"{low}, open_clip"))]
    if args.levers and phase == "compile":  # regional compile of the levers' best rows, references kept
        return [rows[0], rows[1], *lever_rows(model, device, low, phase)]
    if phase == "compile":
        compiled, train_compiled = copy.deepcopy(model), copy.deepcopy(model)
        compile_towers(compiled)
        compile_towers(train_compiled)
        rows = [rows[0], rows[1],  # the baseline and ours fp32, uncompiled: references only
                ours_row("ours fp32 + torch.compile", compiled, device),
                ours_row(f"ours {low} autocast + torch.compile", compiled, device, precision=low),
                train_row("train: ours fp32 + torch.compile", train_compiled, device)]
    elif phase == "train":
        rows = [train_row("train: ours fp32", model, device),
                train_row(f"train: ours {low} autocast", model, device, precision=low)]
        if not args.quick:
            rows.append(train_row("train: ours fp32, 4 micro-batches", model, device, micro=4,
                                  note="gradient accumulation over 4 slices of the batch, one AdamW step"))
            rows.append(train_row("train: ours fp32, QuickGELU unfused", model, device, fused=False))
    if args.rows and phase != "compile":
        keep = re.compile(args.rows)
        rows = [r for r in rows if keep.search(r.name) or r.name.startswith("baseline")]
    if args.levers and phase != "compile":
        rows += lever_rows(model, device, low, phase)
    return rows


def _variant(model, **settings):
    """The same weights with other speed switches (a shallow copy: parameters shared)."""
    other = copy.copy(model)
    other.__dict__ = dict(model.__dict__)
    other.text_cache = {}
    for key, value in settings.items():
        setattr(other, key, value)
    return other


def warm_compiled(rows: list[Row], eval_images, train_images, prompts, device, log) -> None:
    """Compiled rows compile for the full batch shape before timing; the time is reported."""
    for row in rows:
        if "compile" in row.name:
            images = train_images if row.kind == "train" else eval_images
            started = time.perf_counter()
            run_once(row, images, prompts[:len(images)], device)
            row.warmup_s += time.perf_counter() - started
            log(f"  compile warm-up {row.name}: {row.warmup_s:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 4 / train batch 2, 2 repeats, no compile")
    parser.add_argument("--device", choices=["cpu", "cuda"], action="append",
                        help="repeatable; default: cpu, and cuda when present")
    parser.add_argument("--backbone", default="ViT-B-32", help="open_clip name (random weights) or 'tiny'")
    parser.add_argument("--repeats", type=int, help="timed runs per row (default 3; --quick 2)")
    parser.add_argument("--batch", type=int, help="evaluation batch (default 16; --quick 4)")
    parser.add_argument("--train-batch", type=int, help="training batch (default 16; --quick 2)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile rows (default: on, off with --quick)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--image-chunk", type=int, help="CorrespondenceScorer.image_chunk (0: one call)")
    parser.add_argument("--logit-scale", type=float, default=100.0)
    parser.add_argument("--low", choices=["bf16", "fp16"], default="bf16",
                        help="the low precision of the autocast and cast-weights rows (default bf16)")
    parser.add_argument("--phases", default="eval,train,compile",
                        help="comma-separated subset of eval,train,compile (compile also needs --compile)")
    parser.add_argument("--rows", help="only rows whose name matches this regex (the baseline always runs)")
    parser.add_argument("--levers", action="store_true",
                        help="add the 'lean' rows: the GPU options (sdpa, bf16 image weights, fused AdamW, loss on "
                             "the device; with --phases compile, regional compile) on prepared views, nothing "
                             "synchronized inside a run")
    parser.add_argument("--no-memory", action="store_true", help="skip the loader memory measurement")
    parser.add_argument("--json", help="write every number here")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--loader-memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=["eval", "train", "compile"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loader_memory_child:
        print(json.dumps(loader_memory_child(args.loader_memory_child)))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.compile = (not args.quick) if args.compile is None else args.compile
    batch = args.batch = args.batch or (4 if args.quick else 16)
    train_batch = args.train_batch = args.train_batch or (2 if args.quick else 16)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    info = machine_info()
    print(f"# ipce benchmark\n\nmachine: {info['cpu']}, {info['cores']} cores ({info['cpu_capability']}"
          f"{', AVX-512 BF16' if info['avx512_bf16'] else ''}){', GPU ' + info['cuda'] if 'cuda' in info else ''}; "
          f"torch {info['torch']}, {info['threads']} threads; load average at start {info['load_average']}\n"
          f"model: random:{args.backbone}, logit scale {args.logit_scale:g}; eval batch {batch} x (15 crops + global) "
          f"of 512x512 JPEGs, train batch {train_batch} x (8 crops + global); medians of {args.repeats} runs\n")
    images = make_jpegs(max(batch, train_batch), 512, 512)
    prompts = (PROMPTS * ((max(batch, train_batch) // len(PROMPTS)) + 1))[:max(batch, train_batch)]
    results = {"machine": info, "settings": {"batch": batch, "train_batch": train_batch, "repeats": args.repeats,
                                             "backbone": args.backbone, "compile": args.compile,
                                             "levers": args.levers}, "devices": {}}
    if args.phase:  # a child: one device, one phase; entries as JSON on the last line
        device = torch.device(devices[0])
        if device.type == "cuda":
            from ipce.models.speed import cuda_settings

            if not torch.cuda.is_available():
                raise SystemExit("--device cuda: no CUDA device here")
            cuda_settings()
        log(f"{device.type} {args.phase}: building rows")
        rows = build_rows(args, device, log, args.phase)
        warm_compiled(rows, images[:batch], images[:train_batch], prompts, device, log)
        measure(rows, images[:batch], images[:train_batch], prompts, device, args.repeats, log)
        print(json.dumps(summarize(rows, batch, train_batch), default=float))
        return
    wanted = set(args.phases.split(","))
    if not wanted <= {"eval", "train", "compile"}:
        raise SystemExit(f"--phases: unknown phase in {args.phases!r} (eval, train, compile)")
    phases = [p for p in ("eval", "train", "compile") if p in wanted and (p != "compile" or args.compile)]
    for name in devices:
        entries = []
        for phase in phases:
            got = run_phase(args, name, phase)
            if phase == "compile":  # its baseline and uncompiled row only served as references
                got = [e for e in got if "compile" in e["row"]]
            entries += got
        results["devices"][name] = entries
        cuda = name == "cuda"
        print(f"## {name}: evaluation (batch {batch}, 15 crops + global view)\n")
        print(table(entries, "eval", cuda))
        print(f"\n## {name}: training step (batch {train_batch}, 8 crops + global, forward + backward + AdamW)\n")
        print(table(entries, "train", cuda))
        print("\ntargets:\n" + "\n".join(f"- {line}" for line in targets(entries)) + "\n", flush=True)
    if not args.no_memory:
        memory = loader_memory()
        results["loader_memory"] = memory
        print("## loader memory\n")
        print(memory_table(memory))
        print("\npeak RSS increase: VmHWM after minus VmRSS before, peak reset through /proc/self/clear_refs, "
              "fresh process per method; peak live tensor: storages allocated by torch ops and still "
              "referenced, summed at every op (a TorchDispatchMode counter; numpy/PIL buffers not included)\n")
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_s"] = time.perf_counter() - started
    print(f"load average at end {results['machine']['load_average_end']}; wall time {results['wall_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
