"""The model card (README.md) of an exported model folder, written from the checkpoint's metadata and
its run's summary.json: the data and target, the protocol and splits, the metrics with their spread
over splits beside the paper's, the base weights and their licence, intended use and limits, how to load."""
from __future__ import annotations

import json
import math
from pathlib import Path

# Metrics of the card's results table, in order: (summary.json key, shown name).
CARD_METRICS = (("srcc", "SRCC"), ("plcc", "PLCC"), ("krcc", "KRCC"), ("rmse", "RMSE"))
# The metadata keys the card shows in their own sections; every other key is listed as recorded.
_SHOWN = {"format", "version", "created", "model_config", "training", "metrics", "run_summary", "template", "levels",
          "resize", "patches", "train_patches", "mos_range", "backbone", "quick_gelu", "epoch", "prompt_prefix",
          "onnx", "ipce_version", "split", "checkpoint_format"}
# Base weights whose licence ipce knows: OpenAI's CLIP files (github.com/openai/CLIP, MIT) by model name.
OPENAI_HUB_IDS = {"ViT-B-32": "openai/clip-vit-base-patch32", "ViT-B-16": "openai/clip-vit-base-patch16",
                  "ViT-L-14": "openai/clip-vit-large-patch14", "ViT-L-14-336": "openai/clip-vit-large-patch14-336"}
PAPER = "Peng et al., *AIGC Image Quality Assessment via Image-Prompt Correspondence*, CVPR Workshops 2024"


def fmt(value) -> str:
    """A metric as the card writes it: 4 decimals, or n/a for a missing or undefined value."""
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.4f}"


def results_table(meta: dict, summary: dict | None) -> str:
    """The metrics: this model's (its own held-out part), mean ± std, min–max over the run's splits, the paper's."""
    own = meta.get("metrics") or {}
    stats = (summary or {}).get("summary") or {}
    paper = (summary or {}).get("paper") or {}
    n = max((s.get("n") or 0 for s in stats.values()), default=0)
    lines = [f"| metric | this model | mean ± std over {n} split{'s' if n != 1 else ''} | min – max | paper |",
             "| --- | --- | --- | --- | --- |"]
    for key, name in CARD_METRICS:
        s = stats.get(key) or {}
        spread = f"{fmt(s.get('mean'))} ± {fmt(s.get('std'))}" if s else "n/a"
        extent = f"{fmt(s.get('min'))} – {fmt(s.get('max'))}" if s else "n/a"
        lines.append(f"| {name} | {fmt(own.get(key))} | {spread} | {extent} | {fmt(paper.get(key))} |")
    return "\n".join(lines)


def _data_lines(meta: dict, summary: dict | None) -> list[str]:
    training = meta.get("training") or {}
    dataset = training.get("dataset") or training.get("preset") or "custom"
    if training.get("annotations"):
        dataset = f"custom annotations `{Path(training['annotations']).name}`"
    target = (summary or {}).get("target") or training.get("target") or training.get("target_col") or "mos"
    lo, hi = meta.get("mos_range") or (0, 5)
    data = (summary or {}).get("data") or {}
    lines = [f"- Dataset: {dataset}; target: {target}, on {lo:g}..{hi:g} (the scale this model answers on)."]
    if data.get("records"):
        lines.append(f"- {data['records']} usable records of {data.get('rows', data['records'])} rows read.")
    if training.get("prompt_prefix") not in (None, "none"):
        lines.append(f"- Text seen: `{{{training['prompt_prefix']}}} {{prompt}}` (the generator from the file name).")
    for warning in data.get("warnings") or []:
        lines.append(f"- Data warning: {warning}")
    return lines


def _protocol_lines(meta: dict, summary: dict | None) -> list[str]:
    training = meta.get("training") or {}
    splits = training.get("splits_dir") or (f"{training.get('n_splits')} seeded random splits "
                                             f"({training.get('ratio')} train, seed {training.get('seed')})")
    trained = training.get("splits") or []
    if trained:
        splits += f", of which the run trained split{'s' if len(trained) > 1 else ''} {', '.join(map(str, trained))}"
    lines = [f"- Protocol: {(summary or {}).get('protocol') or training.get('protocol', 'unknown')}. "
             + ((summary or {}).get("note") or ""),
             f"- Splits: {splits}; this model is split {meta.get('split', '?')}'s best epoch (epoch "
             f"{meta.get('epoch', '?')})."]
    precision = meta.get("precision") or training.get("precision")
    lines.append(f"- Recipe: {training.get('epochs', '?')} epochs, batch {training.get('batch_size', '?')}, "
                 f"lr {training.get('lr', '?')}, precision {precision or '?'}, resize {meta.get('resize')}, "
                 f"{meta.get('train_patches', '?')} training crops, {meta.get('patches')} evaluation crops.")
    return lines


def _recorded_lines(meta: dict) -> list[str]:
    """Whatever else the checkpoint records (e.g. what it was trained on, its precision), as recorded."""
    return [f"- `{key}`: `{json.dumps(value, ensure_ascii=False)}`" for key, value in meta.items()
            if key not in _SHOWN and value is not None]


def _base_lines(meta: dict) -> list[str]:
    training = meta.get("training") or {}
    backbone = str(meta.get("backbone") or training.get("backbone") or "unknown")
    weights = training.get("weights")
    if backbone in OPENAI_HUB_IDS or (weights and Path(weights).stem in OPENAI_HUB_IDS):
        return [f"- {backbone}, from OpenAI's CLIP weights (`{Path(weights).name if weights else backbone}`), "
                "released under the MIT licence (github.com/openai/CLIP)."]
    if backbone.startswith("random:") or backbone.startswith("tiny") or not weights:
        return [f"- {backbone}, from random weights (no pretrained weights)."]
    return [f"- {backbone}, from `{Path(weights).name}`: its licence is that of the file's publisher; check it "
            "before sharing this model."]


def front_matter(meta: dict) -> str:
    """The hub's metadata block: licence, library, tags, base model where known."""
    backbone = str(meta.get("backbone") or "")
    lines = ["---", "license: mit", "library_name: ipce",
             "tags:", "- image-quality-assessment", "- aigc", "- clip"]
    if backbone in OPENAI_HUB_IDS:
        lines.append(f"base_model: {OPENAI_HUB_IDS[backbone]}")
    return "\n".join(lines + ["---"])


def _load_lines(runtime: str) -> list[str]:
    extra = '"ipce[onnx]"' if runtime == "onnxruntime" else "ipce"
    flag = " --runtime onnxruntime" if runtime == "onnxruntime" else ""
    api = ', runtime="onnxruntime"' if runtime == "onnxruntime" else ""
    return ["```bash", f"pip install {extra}   # or, from a clone of ipce's repository: pip install \".[onnx]\""
            if runtime == "onnxruntime" else f"pip install {extra}   # or, from a clone of ipce's repository: pip install .",
            "hf download OWNER/NAME --local-dir NAME   # this folder, from the hub",
            f"ipce score image.png --prompt \"the prompt\" --checkpoint NAME{flag}",
            "```", "", "```python", "import ipce", "",
            f"scorer = ipce.load_scorer(\"NAME\"{api})",
            "scores = scorer.score([\"image.png\"], \"the prompt\")", "```"]


def model_card(meta: dict, summary: dict | None, runtime: str = "torch") -> str:
    """README.md of a model folder. `summary`: the run's summary.json (None: this model's own metrics only)."""
    training = meta.get("training") or {}
    lo, hi = meta.get("mos_range") or (0, 5)
    texts = ", ".join(f"\"{meta.get('template', '').replace('{level}', level)}\"" for level in meta.get("levels", ()))
    title = f"{meta.get('backbone', 'CLIP')} on {training.get('dataset') or training.get('preset') or 'custom data'}"
    files = ("`image_encoder.onnx` and `text_encoder.onnx` (ONNX, dynamic batch) and `config.json`"
             if runtime == "onnxruntime" else "`model.safetensors` (weights) and `config.json`")
    parts = [
        front_matter(meta), "", f"# ipce: {title}", "",
        f"An image-prompt correspondence scorer ({PAPER}) fine-tuned with ipce: it scores an AI-generated image "
        f"against the prompt it was generated from, on {lo:g}..{hi:g}, higher is better. Files: {files} (the "
        "backbone, texts, views and scale ipce needs to rebuild the scorer).", "",
        "## Training data", "", *_data_lines(meta, summary), "",
        "## Protocol", "", *_protocol_lines(meta, summary), "",
        "## Results", "",
        "Held-out metrics of the run (summary.json); `this model` is its own split's held-out part."
        if summary else "Held-out metrics of this model's own split (the run's summary.json was not given).", "",
        results_table(meta, summary), "",
        *([] if (summary or {}).get("paper") else ["The paper reports no figures for this data (paper: n/a).", ""]),
        "## Model", "",
        f"- Texts: {texts}; the score is the expected level mapped to 0..5"
        + (f", then to {lo:g}..{hi:g}." if (lo, hi) != (0, 5) else "."),
        f"- Views: adaptive resize to {meta.get('resize')} px, {meta.get('patches')} crops of 224 px and the "
        "global view.", *_base_lines(meta), *_recorded_lines(meta), "",
        "## Intended use and limits", "",
        "- Ranking and filtering AI-generated images by how well they match their prompt, e.g. best-of-N "
        "selection, on images like the training data.",
        "- Trained on one benchmark's generators, prompts and raters: scores of other generators, other prompt "
        "styles, photographs or other resolutions are not validated; compare scores within one set rather than "
        "as absolute quality.",
        "- Not a safety or content filter, and not a judge of aesthetics beyond what the raters scored.",
        "- The dataset's own licence and terms apply to uses of a model trained on it.", "",
        "## How to load", "", *_load_lines(runtime), "",
    ]
    return "\n".join(parts)
