"""Challenge submissions (NTIRE 2024 AIGC quality, image track).

A submission folder holds `output.txt` (one `name,score` line per image, in the order of
the annotation file, every image exactly once), `readme.txt` (the challenge's fact sheet)
and `submission.zip` with those two files at its root. Every file is written atomically.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Sequence

from ipce.errors import IpceError
from ipce.utils.io import atomic_file, write_text

OUTPUT_NAME = "output.txt"
README_NAME = "readme.txt"
ZIP_NAME = "submission.zip"

# open_clip vision towers (width, layers, patch size, image size) -> backbone name, to name
# checkpoints whose metadata only says "inferred" (the original code's files).
_KNOWN_TOWERS = {
    (768, 12, 32, 224): "ViT-B/32",
    (768, 12, 16, 224): "ViT-B/16",
    (1024, 24, 14, 224): "ViT-L/14",
    (1024, 24, 14, 336): "ViT-L/14@336px",
}


def output_text(names: Sequence[str], scores: Sequence[float]) -> str:
    """`name,score` lines; refuses a name listed twice or one that would break the line format."""
    if len(names) != len(scores):
        raise IpceError(f"submission: {len(names)} names but {len(scores)} scores")
    seen: set[str] = set()
    lines = []
    for name, score in zip(names, scores):
        if name in seen:
            raise IpceError(f"submission: image {name!r} appears twice; each image must be listed once")
        if any(c in name for c in ",\n\r"):
            raise IpceError(f"submission: image name {name!r} contains a comma or a line break")
        seen.add(name)
        lines.append(f"{name},{float(score):.6f}\n")
    return "".join(lines)


def backbone_name(meta: dict) -> str:
    """A readable backbone name from a member's metadata ('ViT-L/14', 'tiny', ...)."""
    name = str(meta.get("backbone") or "")
    if name and name not in ("inferred", "unknown"):
        return name.removeprefix("random:")
    vision = (meta.get("model_config") or {}).get("vision_cfg") or {}
    layers = vision.get("layers")
    layers = tuple(layers) if isinstance(layers, list) else layers  # a ResNet tower lists its stages
    key = (vision.get("width"), layers, vision.get("patch_size"), vision.get("image_size"))
    if key in _KNOWN_TOWERS:
        return _KNOWN_TOWERS[key]
    if isinstance(layers, tuple):
        return f"ResNet (width {key[0]}, blocks {'-'.join(map(str, layers))})"
    return f"ViT (width {key[0]}, {key[1]} layers, patch {key[2]})"


def _weights_of(meta: dict) -> str:
    if "format" in meta:  # loaded from a checkpoint file
        return "fine-tuned end to end"
    name = str(meta.get("backbone") or "")
    return "with random weights" if name == "tiny" or name.startswith("random:") else "zero-shot"


def describe_scorer(scorer, checkpoints: Sequence[str]) -> str:
    """One line for the fact sheet: models, prompts, crops, ensemble rule, precision."""
    parts = []
    for i, (member, ckpt) in enumerate(zip(scorer.members, checkpoints), 1):
        text = "generator-prefixed prompt ('{generator} {prompt}')" if member.prompt_prefix == "generator" \
            else "plain prompt"
        parts.append(f"model {i}: CLIP {backbone_name(member.meta)} {_weights_of(member.meta)} "
                     f"({Path(str(ckpt)).name}), {text}, adaptive resize {member.views.resize}, "
                     f"{member.views.patches} crops of 224 px + the global view")
    head = ("Image-prompt correspondence (Peng et al., CVPRW 2024): CLIP compares the views with "
            "'a photo that {badly..perfectly} matches {prompt}'; expected level mapped to 0..5")
    if len(parts) > 1:
        rule = "q1*q2/5" if scorer.combine == "product" and len(parts) == 2 else \
            ("product / 5^(M-1)" if scorer.combine == "product" else "mean")
        ensemble = f"ensemble of {len(parts)} models, combine {scorer.combine} ({rule})"
    else:
        ensemble = "single model"
    return "; ".join([head, *parts, ensemble, f"precision {scorer.precision}"])


def readme_text(runtime_per_image: float, cpu: bool, description: str, extra_data: bool = False) -> str:
    """The challenge's fact sheet."""
    description = " ".join(description.split())
    return (f"runtime per image [s] : {runtime_per_image:.4f}\n"
            f"CPU[1] / GPU[0] : {1 if cpu else 0}\n"
            f"Extra Data [1] / Non-Extra Data [0] : {1 if extra_data else 0}\n"
            f"Other description : {description}\n")


def write_zip(path: str | Path, members: dict[str, str]) -> Path:
    """A zip holding `members` (archive name -> text) at its root, written atomically."""
    path = Path(path)
    with atomic_file(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, text in members.items():
                archive.writestr(name, text.encode("utf-8"))
    return path


def write_submission(folder: str | Path, names: Sequence[str], scores: Sequence[float],
                     runtime_per_image: float, cpu: bool, description: str) -> dict[str, Path]:
    """Write output.txt, readme.txt and submission.zip into `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    output = output_text(names, scores)
    readme = readme_text(runtime_per_image, cpu, description)
    paths = {"output": folder / OUTPUT_NAME, "readme": folder / README_NAME, "zip": folder / ZIP_NAME}
    write_text(paths["output"], output, fsync=True)
    write_text(paths["readme"], readme, fsync=True)
    write_zip(paths["zip"], {OUTPUT_NAME: output, README_NAME: readme})
    return paths
