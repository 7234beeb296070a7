"""The demo's generated AIGC quality dataset: coloured shapes, prompts, defects and a MOS.

Every image answers (or fails to answer) a prompt from a small grammar::

    "<count> <colour> <shape(s)> on a <background> background"
    e.g. "one red circle on a blue background", "three white stars on a green background"

count: one, two, three; colour and background: red, green, blue, yellow, white, black
(the background always differs from the shape colour); shape: circle, square, triangle, star.

Defects (each image gets 0, 1 or 2; drawn independently):

* misalignment, with probability ``misalign_rate * generator factor``: the image is rendered
  from altered attributes -- ``wrong_colour``, ``wrong_shape``, ``wrong_count`` or
  ``wrong_background`` (weights ``misalign_kinds``);
* quality, with probability ``quality_rate * generator factor``: one of ``blur`` (Gaussian,
  radius 1..6 px per 400 px of the shorter side), ``noise`` (Gaussian, sd 8..50 grey levels),
  ``jpeg`` (the file is a JPEG saved at quality 15..2) or ``contrast`` (contrast scaled by
  0.45..0.12 about the mean), with a severity ``s`` drawn uniformly in [0, 1] that sets the
  strength linearly between those ends.

MOS rule (a fixed function of the defects plus rater noise)::

    mos = clip(base_mos                                    # 4.5
               - misalign_penalty * [misaligned]           # 1.75
               - (q_lo + (q_hi - q_lo) * s) * [quality]    # 0.5 .. 1.5 by severity s
               + Normal(0, noise_sd),                      # 0.25
               0, 5)

so a clean image scores ~4.5, a misaligned one ~2.75, a degraded one 3.0..4.0 depending on
the severity, and one with both 1.25..2.25.

Generators: each image is made by a pretend generator (uniformly drawn) whose factors scale
the two rates (defaults: ``gen-a`` is good at both, ``gen-b`` aligns well but often looks bad,
``gen-c`` looks fine but often misses the prompt; the factors average to 1, so over the whole
set the rates are ``misalign_rate`` and ``quality_rate``). Image files are named
``<generator>_<index>.png`` (``.jpg`` for the JPEG defect), so the generator is also the file
name up to the first ``_``, as in AIGCQA-30K.

Sizes: with probability ``small_rate`` both sides in [min_side, 220] (below the 224 crop),
with probability ``big_rate`` both sides in [1025, max_side], otherwise both in
``side_range`` (256..600, independent, so most images are not square; ``square_rate`` of them
are). Shapes have a radius of 13..18 % of the shorter side, so after the scorer's resize
(shorter side to 512) a 224 px crop holds a whole shape.

Layout written by :func:`generate` (the custom CSV layout)::

    out_dir/annotations.csv   image,prompt,mos,generator,defects,count,colour,shape,background
    out_dir/images/<image>
    out_dir/config.json       the config that made it (the cache key)

* ``image``: file name relative to ``images/``; ``prompt``; ``mos``: 0..5, 3 decimals;
  ``generator``: e.g. ``gen-a``;
* ``defects``: ``none`` or ``;``-joined items ``kind:value`` -- misalignments carry what was
  drawn instead (``wrong_colour:green``, ``wrong_count:3``), quality defects their severity
  in [0, 1] (``blur:0.62``);
* ``count`` (int 1..3), ``colour``, ``shape`` (singular), ``background``: the prompt's
  attributes (not what was drawn); :func:`mismatched_prompt` takes them (as a dict or a
  pandas row) and returns a prompt that differs in colour, shape or count.

Everything is a function of the seed (numpy ``default_rng`` per image, Pillow drawing), so the
same config gives the same CSV and the same image bytes (for a given Pillow version).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ipce.errors import IpceError
from ipce.utils.io import write_bytes, write_text

FORMAT_VERSION = 1  # bump when the output for a given config changes

COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
WORD_COUNTS = {w: n for n, w in COUNT_WORDS.items()}
COLOURS = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 75, 215),
    "yellow": (240, 210, 35),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars"}
QUALITY_KINDS = ("blur", "noise", "jpeg", "contrast")
MISALIGN_KINDS = ("colour", "shape", "count", "background")
COLUMNS = ("image", "prompt", "mos", "generator", "defects", "count", "colour", "shape",
           "background")

SMALL_MAX = 220  # small images: sides up to this (below the 224 px crop)
BIG_MIN = 1025  # big images: sides from this (above the 1024 px stride switch)


@dataclass(frozen=True)
class SyntheticConfig:
    n: int = 600
    seed: int = 0
    misalign_rate: float = 0.4
    quality_rate: float = 0.4
    min_side: int = 160
    max_side: int = 1100
    big_rate: float = 0.03
    small_rate: float = 0.08
    noise_sd: float = 0.25
    side_range: tuple[int, int] = (256, 600)
    square_rate: float = 0.3
    base_mos: float = 4.5
    misalign_penalty: float = 1.75
    quality_penalty: tuple[float, float] = (0.5, 1.5)  # at severity 0 and 1
    # (kind, weight) for misalignments and quality defects
    misalign_kinds: tuple[tuple[str, float], ...] = (
        ("colour", 0.35), ("shape", 0.3), ("count", 0.2), ("background", 0.15))
    quality_kinds: tuple[tuple[str, float], ...] = (
        ("blur", 0.25), ("noise", 0.25), ("jpeg", 0.25), ("contrast", 0.25))
    # (name, misalignment factor, quality factor)
    generators: tuple[tuple[str, float, float], ...] = (
        ("gen-a", 0.5, 0.5), ("gen-b", 0.75, 1.5), ("gen-c", 1.75, 1.0))
    colour_jitter: int = 18  # +- per channel on shape and background colours

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise IpceError(f"synthetic dataset config: {msg}")

        if self.n < 1:
            bad(f"n={self.n}; need at least 1 image")
        for name in ("misalign_rate", "quality_rate", "big_rate", "small_rate", "square_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                bad(f"{name}={v}; must be in [0, 1]")
        if self.big_rate + self.small_rate > 1.0:
            bad("big_rate + small_rate must be at most 1")
        if self.small_rate > 0 and not 16 <= self.min_side <= SMALL_MAX:
            bad(f"min_side={self.min_side}; must be in [16, {SMALL_MAX}] when small_rate > 0")
        if self.big_rate > 0 and self.max_side < BIG_MIN:
            bad(f"max_side={self.max_side}; must be at least {BIG_MIN} when big_rate > 0")
        lo, hi = self.side_range
        if not 32 <= lo <= hi:
            bad(f"side_range={self.side_range}; need 32 <= low <= high")
        if self.noise_sd < 0:
            bad(f"noise_sd={self.noise_sd}; must be >= 0")
        for kinds, allowed, name in ((self.misalign_kinds, MISALIGN_KINDS, "misalign_kinds"),
                                     (self.quality_kinds, QUALITY_KINDS, "quality_kinds")):
            if not kinds or any(k not in allowed or w < 0 for k, w in kinds) \
                    or sum(w for _, w in kinds) <= 0:
                bad(f"{name}={kinds}; kinds from {allowed} with non-negative weights")
        if not self.generators or any("_" in g or "/" in g or not g
                                      for g, _, _ in self.generators):
            bad("generators need non-empty names without '_' or '/'")


# ---------------------------------------------------------------------------------------------
# prompts

def prompt_text(attrs: dict) -> str:
    """The prompt for attributes ``count`` (1..3 or its word), ``colour``, ``shape``, ``background``."""
    count = _count(attrs["count"])
    shape = attrs["shape"] if count == 1 else PLURALS[attrs["shape"]]
    return f"{COUNT_WORDS[count]} {attrs['colour']} {shape} on a {attrs['background']} background"


def make_prompt(rng: np.random.Generator) -> tuple[str, dict]:
    """A random prompt and its attributes ``{count, colour, shape, background}`` (count an int)."""
    colours = list(COLOURS)
    colour = colours[rng.integers(len(colours))]
    backgrounds = [c for c in colours if c != colour]
    attrs = {
        "count": int(rng.integers(1, 4)),
        "colour": colour,
        "shape": SHAPES[rng.integers(len(SHAPES))],
        "background": backgrounds[rng.integers(len(backgrounds))],
    }
    return prompt_text(attrs), attrs


def _count(value) -> int:
    if isinstance(value, str) and value in WORD_COUNTS:
        return WORD_COUNTS[value]
    return int(value)


def _other(rng: np.random.Generator, options, *exclude):
    choices = [o for o in options if o not in exclude]
    return choices[rng.integers(len(choices))]


def alter_attrs(attrs: dict, kind: str, rng: np.random.Generator) -> dict:
    """Attributes that differ from ``attrs`` in one aspect (the shape colour and the background
    stay different from each other, so the shapes stay visible)."""
    out = {"count": _count(attrs["count"]), "colour": attrs["colour"], "shape": attrs["shape"],
           "background": attrs["background"]}
    if kind == "colour":
        out["colour"] = _other(rng, COLOURS, attrs["colour"], attrs["background"])
    elif kind == "shape":
        out["shape"] = _other(rng, SHAPES, attrs["shape"])
    elif kind == "count":
        out["count"] = int(_other(rng, COUNT_WORDS, out["count"]))
    elif kind == "background":
        out["background"] = _other(rng, COLOURS, attrs["background"], attrs["colour"])
    else:
        raise ValueError(f"unknown attribute to alter: {kind!r}")
    return out


def mismatched_prompt(prompt_attrs, rng: np.random.Generator,
                      kinds: tuple[str, ...] = ("colour", "shape", "count")) -> str:
    """A prompt that differs from ``prompt_attrs`` (a dict or a pandas row with ``count``,
    ``colour``, ``shape``, ``background``) in one of ``kinds`` (drawn uniformly)."""
    kind = kinds[rng.integers(len(kinds))]
    attrs = {k: prompt_attrs[k] for k in ("count", "colour", "shape", "background")}
    return prompt_text(alter_attrs(attrs, kind, rng))


# ---------------------------------------------------------------------------------------------
# rendering

def _jitter(rgb, rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    if amount <= 0:
        return tuple(rgb)
    d = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(np.asarray(rgb) + d, 0, 255))


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        k, radii, start = 4, (r * 1.05,), np.pi / 4
    elif shape == "triangle":
        k, radii, start = 3, (r * 1.15,), -np.pi / 2
    elif shape == "star":
        k, radii, start = 10, (r * 1.15, r * 0.55), -np.pi / 2
    else:
        raise ValueError(f"unknown shape {shape!r}")
    pts = []
    for i in range(k):
        a = start + angle + 2 * np.pi * i / k
        rad = radii[i % len(radii)]
        pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
    return pts


def _place(count: int, w: int, h: int, rng: np.random.Generator) -> tuple[float, list]:
    """A radius and ``count`` non-overlapping centres inside a w x h canvas."""
    short = min(w, h)
    r = float(rng.uniform(0.13, 0.18)) * short
    while True:
        margin = r * 1.2
        for _ in range(200):
            centres: list[tuple[float, float]] = []
            for _ in range(count):
                c = (float(rng.uniform(margin, w - margin)), float(rng.uniform(margin, h - margin)))
                if all((c[0] - x) ** 2 + (c[1] - y) ** 2 >= (2.4 * r) ** 2 for x, y in centres):
                    centres.append(c)
                else:
                    break
            if len(centres) == count:
                return r, centres
        r *= 0.85  # could not fit them: smaller shapes


def render(attrs: dict, size: tuple[int, int], rng: np.random.Generator,
           colour_jitter: int = 18) -> Image.Image:
    """Draw ``count`` ``colour`` ``shape``s on a ``background`` canvas of ``size`` = (w, h)."""
    w, h = int(size[0]), int(size[1])
    count = _count(attrs["count"])
    img = Image.new("RGB", (w, h), _jitter(COLOURS[attrs["background"]], rng, colour_jitter))
    draw = ImageDraw.Draw(img)
    fill = _jitter(COLOURS[attrs["colour"]], rng, colour_jitter)
    r, centres = _place(count, w, h, rng)
    for cx, cy in centres:
        rr = r * float(rng.uniform(0.9, 1.1))
        angle = float(rng.uniform(-0.25, 0.25))
        if attrs["shape"] == "circle":
            draw.ellipse((cx - rr, cy - rr, cx + rr, cy + rr), fill=fill)
        else:
            draw.polygon(_polygon(attrs["shape"], cx, cy, rr, angle), fill=fill)
    return img


def degrade(img: Image.Image, kind: str, severity: float,
            rng: np.random.Generator) -> tuple[Image.Image, bytes | None]:
    """Apply a quality defect of ``severity`` in [0, 1]. Returns the image and, for ``jpeg``,
    the JPEG file bytes it decodes from (to be written as they are)."""
    s = float(np.clip(severity, 0.0, 1.0))
    if kind == "blur":
        radius = (1.0 + 5.0 * s) * min(img.size) / 400.0
        return img.filter(ImageFilter.GaussianBlur(radius)), None
    if kind == "noise":
        a = np.asarray(img, dtype=np.float32)
        a = a + rng.standard_normal(a.shape, dtype=np.float32) * (8.0 + 42.0 * s)
        return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8)), None
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(round(15 - 13 * s)))
        data = buf.getvalue()
        out = Image.open(io.BytesIO(data))
        out.load()
        return out.convert("RGB"), data
    if kind == "contrast":
        a = np.asarray(img, dtype=np.float32)
        factor = 0.45 - 0.33 * s
        m = a.mean()
        a = m + (a - m) * factor
        return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8)), None
    raise ValueError(f"unknown quality defect {kind!r}")


# ---------------------------------------------------------------------------------------------
# one sample

def _pick(rng: np.random.Generator, weighted) -> str:
    names = [k for k, _ in weighted]
    p = np.asarray([w for _, w in weighted], dtype=float)
    return names[rng.choice(len(names), p=p / p.sum())]


def draw_size(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) of a picture, drawn as the dataset draws its images' sizes."""
    u = rng.random()
    if u < cfg.small_rate:
        lo, hi = cfg.min_side, SMALL_MAX
    elif u < cfg.small_rate + cfg.big_rate:
        lo, hi = BIG_MIN, cfg.max_side
    else:
        lo, hi = cfg.side_range
    w = int(rng.integers(lo, hi + 1))
    h = w if rng.random() < cfg.square_rate else int(rng.integers(lo, hi + 1))
    return w, h


def make_sample(index: int, cfg: SyntheticConfig) -> dict:
    """Everything about image ``index``: the row, the image and (for jpeg) its file bytes.
    A function of (seed, index) only, so samples can be made in any order or in parallel."""
    meta_rng, draw_rng, mos_rng = (np.random.default_rng(s) for s in
                                   np.random.SeedSequence([cfg.seed, index]).spawn(3))
    gen, f_mis, f_qual = cfg.generators[meta_rng.integers(len(cfg.generators))]
    size = draw_size(cfg, meta_rng)
    prompt, attrs = make_prompt(meta_rng)
    drawn, defects = attrs, []
    mos = cfg.base_mos
    if meta_rng.random() < min(1.0, cfg.misalign_rate * f_mis):
        kind = _pick(meta_rng, cfg.misalign_kinds)
        drawn = alter_attrs(attrs, kind, meta_rng)
        defects.append(f"wrong_{kind}:{drawn[kind]}")
        mos -= cfg.misalign_penalty
    quality = None
    if meta_rng.random() < min(1.0, cfg.quality_rate * f_qual):
        kind = _pick(meta_rng, cfg.quality_kinds)
        sev = round(float(meta_rng.random()), 2)
        quality = (kind, sev)
        defects.append(f"{kind}:{sev:.2f}")
        lo, hi = cfg.quality_penalty
        mos -= lo + (hi - lo) * sev
    mos = float(np.clip(mos + mos_rng.normal(0.0, cfg.noise_sd), 0.0, 5.0))

    img = render(drawn, size, draw_rng, cfg.colour_jitter)
    data = None
    if quality is not None:
        img, data = degrade(img, quality[0], quality[1], draw_rng)
    name = f"{gen}_{index:05d}.{'jpg' if data is not None else 'png'}"
    row = {"image": name, "prompt": prompt, "mos": f"{mos:.3f}", "generator": gen,
           "defects": ";".join(defects) or "none", **attrs}
    return {"row": row, "image": img, "bytes": data}


# ---------------------------------------------------------------------------------------------
# the dataset on disk

def _config_json(cfg: SyntheticConfig) -> dict:
    return json.loads(json.dumps({"format_version": FORMAT_VERSION, "config": asdict(cfg)}))


def _write_sample(images: Path, sample: dict) -> dict:
    path = images / sample["row"]["image"]
    data = sample["bytes"]
    if data is None:
        buf = io.BytesIO()
        sample["image"].save(buf, format="PNG", compress_level=1)
        data = buf.getvalue()
    write_bytes(path, data)
    return sample["row"]


def _make_and_write(args) -> dict:
    index, cfg, images = args
    return _write_sample(images, make_sample(index, cfg))


def is_cached(out_dir, config: SyntheticConfig) -> bool:
    out = Path(out_dir)
    try:
        return (out / "annotations.csv").is_file() and \
            json.loads((out / "config.json").read_text()) == _config_json(config)
    except (OSError, ValueError):
        return False


def generate(out_dir, config: SyntheticConfig = SyntheticConfig(), progress: bool = True,
             workers: int = 1) -> Path:
    """Write ``out_dir/images/*`` and ``out_dir/annotations.csv`` (last) for ``config``; return
    the annotations path. If they already exist for the same config, return at once.
    ``workers`` > 1 renders in that many processes (same output)."""
    config.validate()
    out = Path(out_dir)
    ann = out / "annotations.csv"
    if is_cached(out, config):
        return ann
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    old_names = set()
    if ann.is_file():  # invalidate the old set first; remember its files to clean up
        try:
            with open(ann, newline="", encoding="utf-8") as f:
                old_names = {r["image"] for r in csv.DictReader(f) if r.get("image")}
        except (OSError, csv.Error, UnicodeDecodeError):
            pass
        ann.unlink()
    (out / "config.json").unlink(missing_ok=True)

    from ipce.utils.progress import progress_bar

    jobs = [(i, config, images) for i in range(config.n)]
    bar = dict(total=config.n, desc="synthetic images", unit="img", enabled=progress)
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            rows = list(progress_bar(pool.imap(_make_and_write, jobs, chunksize=8), **bar))
    else:
        rows = [_make_and_write(j) for j in progress_bar(jobs, **bar)]

    new_names = {r["image"] for r in rows}
    for name in old_names - new_names:
        if "/" not in name and "\\" not in name:
            (images / name).unlink(missing_ok=True)

    write_text(out / "config.json", json.dumps(_config_json(config), indent=1))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(ann, buf.getvalue())
    return ann
