"""Helpers that write tiny images and dataset layouts into a folder (usually pytest's tmp_path).

The published layouts are built from the REAL sample annotation files copied into
`tests/data/annotation-samples/`; the whole published files (annotations and the
original authors' split folders, unchanged) are `tests/data/published.tar.xz`,
unpacked once per test run by `published_dir()`. Image names are read here with
the csv module / openpyxl, independently of `ipce.datasets.sources`.
"""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# preset -> (folder, {subset: annotation files to copy})
LAYOUTS = {
    "agiqa1k": ("AGIQA-1K", ("all.csv", "AIGC_MOS_Zscore.xlsx")),
    "agiqa3k": ("AGIQA-3K", ("data.csv",)),
    "aigciqa2023": ("AIGCIQA2023", ("all_set.csv",)),
    "aigcqa30k": ("AIGCQA-30K-Image", ("info_train.csv", "info_val.csv", "info_train.xlsx")),
}


DATA = REPO / "tests" / "data"


def samples_dir() -> Path:
    return DATA / "annotation-samples"


_PUBLISHED: list[Path] = []


def published_dir() -> Path:
    """The whole published files (`published/` of the tarball), unpacked once into a temporary folder."""
    import atexit
    import tarfile
    import tempfile

    if not _PUBLISHED:
        root = Path(tempfile.mkdtemp(prefix="ipce-published-"))
        atexit.register(shutil.rmtree, root, True)
        with tarfile.open(DATA / "published.tar.xz") as tar:
            # writable copies, so that the temporary folder can always be removed
            tar.extractall(root, filter=lambda member, path: tarfile.data_filter(member, path).replace(
                mode=0o755 if member.isdir() else 0o644))
        _PUBLISHED.append(root / "published")
    return _PUBLISHED[0]


def require_samples() -> Path:
    """The sample rows' folder (part of the repository)."""
    return samples_dir()


def write_image(path, size=(32, 32), color=None, seed: int | None = None, quality: int = 90) -> Path:
    """A small RGB image; noise when `seed` is given, a flat colour otherwise. Format from the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        im = Image.fromarray(pixels, "RGB")
    else:
        im = Image.new("RGB", size, color or (200, 100, 50))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, "JPEG", quality=quality)
    else:
        im.save(path)
    return path


def csv_rows(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return [row for row in csv.reader(fh) if row]


def xlsx_rows(path) -> list[list]:
    import openpyxl

    sheet = openpyxl.load_workbook(path, read_only=True).worksheets[0]
    return [list(r) for r in sheet.iter_rows(values_only=True) if any(v is not None for v in r)]


def image_paths(preset: str, folder: Path, annotation: str) -> list[Path]:
    """Where each row's image lives in the publisher's layout (independent of the readers)."""
    path = folder / annotation
    rows = xlsx_rows(path) if annotation.endswith(".xlsx") else csv_rows(path)
    if preset == "agiqa1k":
        return [folder / "file" / str(r[0]) for r in rows[1:]]
    if preset == "agiqa3k":
        return [folder / str(r[0]) for r in rows[1:]]
    if preset == "aigciqa2023":
        return [folder / str(r[0]) / str(r[1]) for r in rows[1:]]
    subset = annotation.split("_", 1)[1].split(".")[0]
    body = rows[1:] if annotation.endswith(".xlsx") else rows  # the csv files have no header
    return [folder / subset / str(r[0]) for r in body]


def build_preset(preset: str, root, files=None, images: bool = True) -> Path:
    """Copy the sample annotation file(s) of `preset` into `<root>/<folder>/` and write a 32x32 image for
    every row. Returns the dataset folder."""
    samples = require_samples()
    folder_name, default_files = LAYOUTS[preset]
    folder = Path(root) / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    for name in files or default_files:
        target = folder / name
        shutil.copyfile(samples / folder_name / name, target)
        os.chmod(target, 0o644)
        if images:
            for i, image in enumerate(image_paths(preset, folder, name)):
                if not image.exists():
                    write_image(image, color=((i * 37) % 256, (i * 91) % 256, 128))
    return folder


def build_custom(root, n: int = 6, bad: dict | None = None, header=("image", "prompt", "mos")) -> tuple[Path, Path]:
    """`<root>/labels.csv` + `<root>/imgs/img_<i>.png`; `bad` maps an index to 'missing', 'empty',
    'text' or 'truncated'. Returns (annotations, images folder)."""
    root = Path(root)
    images = root / "imgs"
    images.mkdir(parents=True, exist_ok=True)
    bad = bad or {}
    lines = [",".join(header)]
    for i in range(n):
        name = f"gen{i % 2}_{i:03d}.png"
        lines.append(f'{name},"prompt {i}, with a comma",{1 + i * 0.5}')
        path = images / name
        kind = bad.get(i)
        if kind == "missing":
            continue
        if kind == "empty":
            path.write_bytes(b"")
        elif kind == "text":
            path.write_text("not an image at all")
        elif kind == "truncated":
            write_image(path, size=(48, 48), seed=i)
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        else:
            write_image(path, seed=i)
    annotations = root / "labels.csv"
    annotations.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return annotations, images


def build_agiqa3k_like(root, n: int, size: int = 64, generators=("AttnGAN", "DALLE2", "glide", "midjourney")) -> Path:
    """An AGIQA-3K-layout folder (`data.csv` + JPEG images beside it) with `n` noise images."""
    folder = Path(root) / "AGIQA-3K"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    lines = ["name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align"]
    for i in range(n):
        name = f"{generators[i % len(generators)]}_normal_{i:05d}.jpg"
        shifted = np.roll(base, i, axis=1) ^ np.uint8(i % 251)
        Image.fromarray(shifted, "RGB").save(folder / name, "JPEG", quality=90)
        lines.append(f'{name},"prompt number {i}, realistic style",,,,{(i % 50) / 10:.3f},0.5,{(i % 40) / 10:.3f},0.5')
    (folder / "data.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def brightness_dataset(root, n: int = 40, seed: int = 0) -> tuple[Path, Path]:
    """`<root>/annotations.csv` + `<root>/images/gen_<i>.png`: 224x224 images whose MOS is their
    brightness (0..5), a signal a tiny CLIP learns in a couple of epochs. Returns (annotations, images)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        level = rng.uniform(0.05, 0.95)
        pixels = np.clip(rng.normal(level * 255, 20, size=(224, 224, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"gen_{i:03d}.png")
        rows.append([f"gen_{i:03d}.png", "a photo", round(5 * level, 3)])
    annotations = root / "annotations.csv"
    with annotations.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "prompt", "mos"])
        writer.writerows(rows)
    return annotations, images


def tiny_flags(annotations, images, out, epochs: int = 2) -> list[str]:
    """The `ipce train` flags of a quick run of the tiny backbone on one split (after "train")."""
    return ["--annotations", str(annotations), "--images", str(images), "--backbone", "tiny", "--epochs", str(epochs),
            "--lr", "1e-3", "--resize", "224", "--train-patches", "1", "--eval-patches", "1", "--batch-size", "8",
            "--workers", "0", "--splits", "1", "--out", str(out), "--no-flip"]
