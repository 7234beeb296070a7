"""A scorer as two ONNX graphs, and the scorer that runs them with onnxruntime (the `onnx` extra).

`export_onnx` writes the image tower (views [N, 3, 224, 224] float32 -> normalized features [N, D])
and the text tower (token ids [N, L] int64, L up to the context length -> normalized features
[N, D]), both with a dynamic first axis, through torch.onnx's torch.export-based exporter (the
TorchScript-based one bakes the text tower's attention shapes into the graph). Everything after
the towers is a few numbers: the logit scale, the texts' template and levels, the views, the
score scale, written to config.json beside the graphs. `OnnxScorer` tokenizes with open_clip's
tokenizer, runs the graphs with onnxruntime (its CUDA provider on a CUDA device where installed,
else the CPU) and computes the levels and the score with the same functions as
`CorrespondenceScorer` (ipce.models.correspondence), so the scores are PyTorch's in fp32 within
float rounding.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ipce.errors import IpceError, WeightsError
from ipce.models.checkpoint import CONFIG_FILE, ONNX_FORMAT, folder_config, load_checkpoint
from ipce.models.correspondence import CorrespondenceScorer, level_texts, probs_from_logits, score_from_probs

log = logging.getLogger(__name__)

IMAGE_FILE = "image_encoder.onnx"
TEXT_FILE = "text_encoder.onnx"
OPSET = 18
EXTERNAL_DATA_BYTES = 1_500_000_000  # above this a graph's weights go to a .data file beside it (protobuf's 2 GB)
INSTALL = "pip install \"ipce[onnx]\""


class _ImageTower(nn.Module):
    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(views).float(), dim=-1)


class _TextTower(nn.Module):
    def __init__(self, scorer: CorrespondenceScorer):
        super().__init__()
        self.scorer = scorer

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.scorer.encode_tokens(tokens, cut_padding=False).float(), dim=-1)


def _export_graph(module: nn.Module, example: torch.Tensor, path: Path, names: tuple[str, str], dims: dict) -> None:
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it; say which extra brings it)
    except ImportError:
        raise IpceError(f"--format onnx needs onnx and onnxscript: {INSTALL}") from None
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=[names[0]], output_names=[names[1]],
                                    dynamic_shapes=(dims,), opset_version=OPSET, optimize=True, verbose=False)
    program.save(str(path), external_data=size > EXTERNAL_DATA_BYTES)


def export_onnx(checkpoint: str | Path, out: str | Path, extra: dict | None = None) -> dict:
    """Write the two towers of `checkpoint` (an ipce checkpoint or model folder) as ONNX graphs in `out`
    and config.json (the checkpoint's metadata, `extra`, and `onnx`: the files, inputs and logit scale)."""
    from ipce.utils.io import write_json

    model, meta = load_checkpoint(checkpoint, "cpu")
    model = model.float().eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    context = int(model.clip.positional_embedding.shape[0])
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=context)
    tokens = model.tokenize(["an example prompt", "a longer example prompt with more words"])
    tokens = tokens[:, : int(tokens.argmax(-1).max()) + 1]
    log.info("exporting the image tower to %s", out / IMAGE_FILE)
    _export_graph(_ImageTower(model.clip).eval(), torch.zeros(2, 3, 224, 224), out / IMAGE_FILE,
                  ("views", "features"), {0: batch})
    log.info("exporting the text tower to %s", out / TEXT_FILE)
    _export_graph(_TextTower(model).eval(), tokens, out / TEXT_FILE, ("tokens", "features"), {0: batch, 1: length})
    config = {**meta, **(extra or {}), "checkpoint_format": meta.get("format"), "format": ONNX_FORMAT,
              "onnx": {"image_encoder": IMAGE_FILE, "text_encoder": TEXT_FILE, "opset": OPSET,
                       "logit_scale": float(model.clip.logit_scale.exp()), "context_length": context,
                       "image_size": 224, "torch": torch.__version__}}
    write_json(out / CONFIG_FILE, config)
    return config


def _session(path: Path, device: torch.device):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as PyTorch would use
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        else:
            log.warning("onnxruntime has no CUDA provider here (onnxruntime-gpu is not installed): scoring on the CPU")
    return ort.InferenceSession(str(path), options, providers=providers)


class OnnxScorer:
    """The scorer of a folder of ONNX graphs: `scorer(crops, global_view, prompts)` -> scores [B] on 0..5,
    as `CorrespondenceScorer` gives them; text features cached by prompt (`text_cache`)."""

    image_chunk = 32  # views per image-graph call

    def __init__(self, folder: Path, config: dict, device: torch.device):
        import open_clip

        onnx = config["onnx"]
        self.template, self.levels = config["template"], tuple(config["levels"])
        self.logit_scale = float(onnx["logit_scale"])
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=int(onnx["context_length"]))
        self.image_session = _session(folder / onnx["image_encoder"], device)
        self.text_session = _session(folder / onnx["text_encoder"], device)
        self.text_cache: dict[str, torch.Tensor] = {}

    @property
    def needs_prompt(self) -> bool:
        return "{prompt}" in self.template

    def eval(self) -> "OnnxScorer":
        return self

    def train(self, mode: bool = True) -> "OnnxScorer":
        if mode:
            raise IpceError("an ONNX scorer only scores; train from the checkpoint (PyTorch)")
        return self

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Normalized features [len(prompts), K, D], the padding after the longest end-of-text cut."""
        tokens = self.tokenizer([t for p in prompts for t in level_texts(p, self.template, self.levels)])
        tokens = tokens[:, : int(tokens.argmax(-1).max()) + 1]
        feats = self.text_session.run(None, {"tokens": tokens.numpy()})[0]
        return torch.from_numpy(feats).view(len(prompts), len(self.levels), -1)

    def text_features(self, prompts: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(p for p in prompts if p not in self.text_cache))
        if missing:
            self.text_cache.update(zip(missing, self.encode_prompts(missing)))
        return torch.stack([self.text_cache[p] for p in prompts])

    def image_features(self, crops: torch.Tensor, global_view: torch.Tensor) -> torch.Tensor:
        batch, patches = crops.shape[:2]
        views = torch.cat([crops, global_view[:, None].to(crops.dtype)], dim=1).flatten(0, 1).float().cpu()
        parts = [self.image_session.run(None, {"views": part.contiguous().numpy()})[0]
                 for part in views.split(self.image_chunk)]
        return torch.from_numpy(np.concatenate(parts)).view(batch, patches + 1, -1)

    def __call__(self, crops: torch.Tensor, global_view: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        image_feats, text_feats = self.image_features(crops, global_view), self.text_features(list(prompts))
        logits = self.logit_scale * torch.einsum("bvd,bkd->bvk", image_feats, text_feats)
        return score_from_probs(probs_from_logits(logits))


def load_onnx(path: str | Path, device: str | torch.device = "cpu") -> tuple[OnnxScorer, dict]:
    """(scorer, config) of a folder written by `ipce export --format onnx`."""
    path = Path(path)
    config = folder_config(path) if path.is_dir() else None
    if config is None or config.get("format") != ONNX_FORMAT:
        raise WeightsError(f"{path}: not a folder of ONNX graphs; --runtime onnxruntime takes the folder of "
                           f"`ipce export CHECKPOINT --format onnx --out DIR`")
    try:
        import onnxruntime  # noqa: F401  (imported only to say, before any work, that it is missing)
    except ImportError:
        raise IpceError(f"--runtime onnxruntime needs onnxruntime: {INSTALL}") from None
    for key in ("image_encoder", "text_encoder"):
        if not (path / config["onnx"][key]).is_file():
            raise WeightsError(f"{path / config['onnx'][key]}: missing; export the folder again")
    return OnnxScorer(path, config, torch.device(device)), config
