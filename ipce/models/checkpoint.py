"""Checkpoints: safetensors weights with the JSON metadata inside the same file.

Ours are self-describing (backbone config, template, levels, view settings, training config,
metrics, `mos_range`: the scale of the training scores, which the model answers on) and written
atomically; a file without `mos_range` (older ones, the original code's) answers on the model's 0..5.
The original code's `torch.save({'model_state_dict': ...})` files and bare CLIP weight files load too,
with the architecture read off the tensor shapes. A model folder (`ipce export`: `model.safetensors`
beside `config.json`, the layout a model hub expects) loads as the checkpoint it was exported from.
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
from ipce.models.views import ViewConfig
from ipce.utils.io import atomic_file

FORMAT = "ipce-checkpoint"
VERSION = 1
# What a checkpoint without metadata (the original code's, a bare CLIP) is evaluated with: the method's views.
ORIGINAL_DEFAULTS = {"resize": ViewConfig.resize, "patches": ViewConfig.patches}
# A model folder: the weights (with the metadata in their header, as a checkpoint) and the metadata as JSON.
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
ONNX_FORMAT = "ipce-onnx"  # config.json's `format` in a folder of ONNX graphs (ipce.models.onnx)


def folder_config(path: str | Path) -> dict | None:
    """config.json of a model folder (`ipce export`), or None when `path` is not a folder."""
    path = Path(path)
    if not path.is_dir():
        return None
    config = path / CONFIG_FILE
    if not config.is_file():
        raise WeightsError(f"{path}: a folder without {CONFIG_FILE}; give a checkpoint file or a folder written "
                           "by `ipce export`")
    try:
        return json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise WeightsError(f"{config}: not readable JSON ({err}); export the folder again") from None


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
    """The ipce metadata of a checkpoint (or a model folder's config.json), or None for files without it."""
    path = Path(path)
    if path.is_dir():
        return folder_config(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("ipce")
    except Exception as err:  # noqa: BLE001  (safetensors raises several types for a file that is not one)
        raise WeightsError(f"{path}: not a readable safetensors file ({err})") from None
    return json.loads(raw) if raw else None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[CorrespondenceScorer, dict]:
    """(scorer, metadata) from any supported checkpoint; metadata defaults filled for foreign files."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such checkpoint")
    meta = read_metadata(path)
    if path.is_dir():
        if meta.get("format") == ONNX_FORMAT:
            raise WeightsError(f"{path}: a folder of ONNX graphs; score it with --runtime onnxruntime "
                               "(load_scorer(..., runtime='onnxruntime'))")
        path = path / MODEL_FILE
        if not path.is_file():
            raise WeightsError(f"{path}: missing; a model folder holds {MODEL_FILE} beside {CONFIG_FILE}")
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


def save_model_folder(checkpoint: str | Path, out: str | Path, extra: dict | None = None) -> dict:
    """Write `checkpoint` (an ipce checkpoint file or model folder) as a model folder `out`:
    MODEL_FILE (the same tensors, in their stored dtype, with the metadata in the header) and
    CONFIG_FILE (the metadata, plus `extra`). Returns the metadata written."""
    from safetensors.torch import load_file, save_file

    from ipce.utils.io import write_json

    source = Path(checkpoint)
    meta = read_metadata(source)
    if meta is None or meta.get("format") == ONNX_FORMAT:
        raise WeightsError(f"{source}: not an ipce checkpoint (one written by `ipce train`, or a folder of "
                           "`ipce export`); only those carry what a model folder describes")
    weights = source / MODEL_FILE if source.is_dir() else source
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**meta, **(extra or {})}
    tensors = load_file(str(weights))
    with atomic_file(out / MODEL_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"ipce": json.dumps(meta)})
    write_json(out / CONFIG_FILE, meta)
    return meta
