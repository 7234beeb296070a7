"""Checkpoints: safetensors weights with the JSON metadata inside the same file.

Ours are self-describing (backbone config, template, levels, view settings, training config,
metrics, `mos_range`: the scale of the training scores, which the model answers on) and written
atomically; a file without `mos_range` (older ones, the original code's) answers on the model's 0..5.
The original code's `torch.save({'model_state_dict': ...})` files and bare CLIP weight files load too,
with the architecture read off the tensor shapes.
Nothing is ever unpickled beyond tensors (`weights_only=True`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ipce.errors import WeightsError
from ipce.models.backbone import clip_from_state_dict, read_state_dict
from ipce.models.correspondence import LEVELS, TEMPLATE, CorrespondenceScorer
from ipce.utils.io import atomic_file

FORMAT = "ipce-checkpoint"
VERSION = 1
# What a checkpoint without metadata (the original code's, a bare CLIP) is evaluated with.
ORIGINAL_DEFAULTS = {"resize": 512, "patches": 15}


def save_checkpoint(path: str | Path, model: CorrespondenceScorer, meta: dict,
                    dtype: torch.dtype = torch.float32) -> Path:
    """Write weights + metadata to `path` (a .safetensors file) atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    clip = model.module.clip if hasattr(model, "module") else model.clip
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in clip.state_dict().items()}
    full_meta = {
        "format": FORMAT,
        "version": VERSION,
        "template": model.template if hasattr(model, "template") else TEMPLATE,
        "levels": list(getattr(model, "levels", LEVELS)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **meta,
    }
    if "model_config" not in full_meta:
        raise ValueError("checkpoint metadata needs model_config")
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata={"ipce": json.dumps(full_meta)})
    return path


def read_metadata(path: str | Path) -> dict | None:
    """The ipce metadata of a checkpoint, or None for files without it."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("ipce")
    except Exception as err:  # noqa: BLE001
        raise WeightsError(f"{path}: not a readable safetensors file ({err})") from None
    return json.loads(raw) if raw else None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[CorrespondenceScorer, dict]:
    """(scorer, metadata) from any supported checkpoint; metadata defaults filled for foreign files."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such checkpoint")
    meta = read_metadata(path)
    state = read_state_dict(path)
    if meta is not None:
        clip, _ = clip_from_state_dict(state, meta["model_config"], meta.get("quick_gelu", True), source=path)
        template, levels = meta.get("template", TEMPLATE), meta.get("levels", LEVELS)
    else:
        clip, config = clip_from_state_dict(state, None, quick_gelu=True, source=path)
        meta = {"format": "foreign", "backbone": "inferred", "model_config": config, **ORIGINAL_DEFAULTS}
        template, levels = TEMPLATE, LEVELS
    model = CorrespondenceScorer(clip, template=template, levels=levels).to(device).eval()
    return model, meta
