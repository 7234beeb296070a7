"""`ipce export`: a checkpoint as a folder to share on a model hub, with its model card.

- safetensors: `model.safetensors` + `config.json` (ipce.models.checkpoint.save_model_folder);
- onnx: `image_encoder.onnx` + `text_encoder.onnx` + `config.json` (ipce.models.onnx.export_onnx).
Both get `README.md`, the model card (ipce.engine.card), from the checkpoint's metadata and the run's
summary.json. The summary is also kept in config.json (`run_summary`), so a folder exported again
(e.g. to ONNX) keeps its card.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from ipce.errors import IpceError

log = logging.getLogger(__name__)

FORMATS = ("safetensors", "onnx")
CARD_FILE = "README.md"


def find_summary(checkpoint: Path) -> Path | None:
    """The run's summary.json beside a checkpoint: in its folder or the one above (a run's
    `<run>/split<k>/best.safetensors` has `<run>/summary.json`)."""
    if checkpoint.is_dir():
        return None
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "summary.json").is_file():
            return folder / "summary.json"
    return None


def read_summary(path: Path) -> dict:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise IpceError(f"{path}: not a readable summary.json ({err}); give --summary FILE or --no-summary") from None
    if not isinstance(summary, dict) or "summary" not in summary:
        raise IpceError(f"{path}: not a run's summary.json (no 'summary' key); give the one `ipce train` wrote")
    return summary


def run_extras(checkpoint: Path, summary_path: Path | None, meta: dict) -> dict:
    """What the folder adds to the checkpoint's metadata: the run's summary and the split it came from."""
    from ipce import __version__

    extra = {"ipce_version": __version__}
    if summary_path is not None:
        extra["run_summary"] = read_summary(summary_path)
        log.info("model card from %s", summary_path)
    found = re.fullmatch(r"split(\d+)", checkpoint.parent.name) if checkpoint.is_file() else None
    if found and "split" not in meta:
        extra["split"] = int(found.group(1))
    return extra


def export_model(checkpoint: str | Path, out: str | Path, fmt: str = "safetensors",
                 summary: str | Path | None = None, use_summary: bool = True) -> dict:
    """Write the model folder `out` of `checkpoint` in format `fmt`; returns the config written.
    `summary`: the run's summary.json (default: found beside the checkpoint; `use_summary=False`: none)."""
    from ipce.models.checkpoint import CONFIG_FILE, read_metadata
    from ipce.utils.io import write_text

    if fmt not in FORMATS:
        raise IpceError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.exists():
        raise IpceError(f"{checkpoint}: no such checkpoint")
    if out.resolve() == checkpoint.resolve() or (out.is_dir() and any(out.iterdir()) and not (out / CONFIG_FILE).is_file()):
        raise IpceError(f"--out {out}: an existing folder that is not a model folder; give a new or empty folder")
    meta = read_metadata(checkpoint)
    if meta is None:
        raise IpceError(f"{checkpoint}: not an ipce checkpoint (no metadata); only a checkpoint written by "
                        "`ipce train` (or a folder of `ipce export`) carries what a model folder describes")
    summary_path = Path(summary) if summary else (find_summary(checkpoint) if use_summary else None)
    extra = run_extras(checkpoint, summary_path, meta)
    if fmt == "onnx":
        from ipce.models.onnx import export_onnx

        config = export_onnx(checkpoint, out, extra)
    else:
        from ipce.models.checkpoint import save_model_folder

        config = save_model_folder(checkpoint, out, extra)
    write_text(out / CARD_FILE, model_card_of(config, "onnxruntime" if fmt == "onnx" else "torch"))
    return config


def model_card_of(config: dict, runtime: str) -> str:
    from ipce.engine.card import model_card

    return model_card(config, config.get("run_summary"), runtime)
