"""CLIP backbones: an open_clip model from a name plus a local weight file, never a download.

An architecture is an open_clip model config (``{"embed_dim", "vision_cfg", "text_cfg"}``)
plus ``quick_gelu``; it is what our checkpoints store, so a checkpoint rebuilds its model
without anything else. Weights come from OpenAI's TorchScript files (as ``clip.load`` caches
them), open_clip ``.bin``/``.safetensors`` files, or plain state dicts; pickles are only ever
read with ``weights_only=True``.
"""
from __future__ import annotations

import copy
import pickle
import zipfile
from pathlib import Path

import torch

from ipce.errors import WeightsError
from ipce.models.weights import OPENAI_WEIGHTS, candidates, locate

# Tiny towers for tests and the demo: random weights, the real tokenizer. Heads = width // 64.
TINY_CONFIGS: dict[str, dict] = {
    "tiny": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": 128, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
    },
    # The demo's model: CLIP's ResNet image tower (as in OpenAI's RN50), 8 channels wide.
    # Its small convolutions see blur, noise and JPEG blocks that the tiny ViT's 32-px patches
    # average away (a linear probe of its features predicts a picture's defect severity far better).
    "tiny-resnet": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 224, "layers": (1, 1, 1, 1), "width": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
    },
}

RANDOM_PREFIX = "random:"


def model_config(name: str) -> dict:
    """The open_clip config of a backbone name ('ViT-B-32', 'tiny', ...)."""
    if name in TINY_CONFIGS:
        return copy.deepcopy(TINY_CONFIGS[name])
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        import difflib

        known = sorted(TINY_CONFIGS) + sorted(OPENAI_WEIGHTS)
        near = difflib.get_close_matches(name, known + open_clip.list_models(), n=3, cutoff=0.6)
        nearest = f"; nearest names: {', '.join(dict.fromkeys(near))}" if near else ""
        raise WeightsError(f"unknown checkpoint or backbone '{name}': no such file, and no backbone of that name"
                           f"{nearest} (known here: {', '.join(known)}, or another open_clip model name)")
    cfg = copy.deepcopy(cfg)
    cfg.pop("custom_text", None)
    return cfg


def build_clip(config: dict, quick_gelu: bool = True) -> torch.nn.Module:
    """A randomly initialised open_clip CLIP of this architecture, in fp32."""
    from open_clip.model import CLIP

    cfg = copy.deepcopy(config)
    model = CLIP(
        embed_dim=cfg["embed_dim"],
        vision_cfg=cfg["vision_cfg"],
        text_cfg=cfg["text_cfg"],
        quick_gelu=quick_gelu,
    )
    return model.float()


def find_weights(name: str) -> Path:
    """The local weight file of a pretrained backbone, or a one-line error naming where we looked
    and how to get it."""
    found = locate(name)
    if found is not None:
        return found
    looked = candidates(name)
    shown = ", ".join(str(p) for p in looked[:3])
    known = OPENAI_WEIGHTS.get(name)
    get = (f"run `ipce weights fetch {name}` (OpenAI's {known.file}, {known.url}) "
           if known else "put the file in one of those folders ")
    raise WeightsError(f"no weights for {name}: looked for {shown} and {len(looked) - 3} more paths "
                       f"(`ipce weights list` shows them); {get}or pass --weights FILE")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weight file of any supported kind, keys in OpenAI/open_clip layout."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weight file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: the weight file is empty (an interrupted download?)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif _is_torchscript(path):
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to read is the user's file, said in one line
        if isinstance(err, pickle.UnpicklingError):  # torch's text advises weights_only=False: never do that here
            raise WeightsError(
                f"{path}: not a checkpoint ipce can load safely: the file holds Python objects besides tensors, "
                "and ipce never unpickles those (they could run code); save the weights alone "
                "(torch.save(model.state_dict(), FILE)) or as .safetensors") from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(
            f"{path}: cannot read weights safely ({type(err).__name__}: {first[:200]}); "
            "ipce only loads safetensors, TorchScript archives and tensor-only torch.save files"
        ) from None
    return unwrap_state_dict(state, path)


def unwrap_state_dict(state, path: str | Path = "weights") -> dict[str, torch.Tensor]:
    """Find the model's tensors inside common checkpoint wrappers and strip DDP prefixes."""
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors")
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in ("module.", "clip."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    for key in ("input_resolution", "context_length", "vocab_size", "attn_mask"):
        out.pop(key, None)  # TorchScript extras, rebuilt by the model
    return out


def infer_config(state: dict[str, torch.Tensor]) -> dict:
    """The architecture of an OpenAI-layout ViT CLIP state dict, read off its tensor shapes."""
    if "visual.conv1.weight" not in state or "visual.proj" not in state:
        raise WeightsError("only ViT CLIP state dicts are supported (no visual.conv1.weight / visual.proj found)")

    def count_blocks(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})

    conv = state["visual.conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state["ln_final.weight"].shape[0]
    return {
        "embed_dim": int(state["text_projection"].shape[1]),
        "vision_cfg": {
            "image_size": int(grid * patch),
            "layers": count_blocks("visual.transformer.resblocks."),
            "width": int(width),
            "patch_size": int(patch),
        },
        "text_cfg": {
            "context_length": int(state["positional_embedding"].shape[0]),
            "vocab_size": int(state["token_embedding.weight"].shape[0]),
            "width": int(text_width),
            "heads": int(text_width // 64) or 1,
            "layers": count_blocks("transformer.resblocks."),
        },
    }


def clip_from_state_dict(state: dict[str, torch.Tensor], config: dict | None = None,
                         quick_gelu: bool = True, source: str | Path = "weights") -> tuple[torch.nn.Module, dict]:
    """Build a CLIP around a state dict (architecture inferred when not given); fp32 weights."""
    config = config or infer_config(state)
    model = build_clip(config, quick_gelu=quick_gelu)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(
            f"{source}: weights do not fit the architecture ({len(missing)} missing, e.g. {missing[:2]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )
    return model, config


def load_backbone(name: str, weights: str | Path | None = None) -> tuple[torch.nn.Module, dict, str]:
    """(model, config, description) for a backbone name.

    ``tiny`` and ``random:<name>`` are random weights unless a weight file is given (the
    demo's pretrained tiny model); other names need a local weight file, given or found in the
    caches. OpenAI weights use QuickGELU.
    """
    random = name.startswith(RANDOM_PREFIX) or name in TINY_CONFIGS
    base = name.removeprefix(RANDOM_PREFIX)
    if random and not weights:
        torch_config = model_config(base)
        return build_clip(torch_config, quick_gelu=True), torch_config, f"{base} (random weights)"
    config = model_config(base)  # an unknown name (a typo) is said as such before any weight file is looked for
    path = Path(weights) if weights else find_weights(name)
    state = read_state_dict(path)
    model, config = clip_from_state_dict(state, config, quick_gelu=True, source=path)
    return model, config, f"{base} ({path})"
