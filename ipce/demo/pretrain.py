"""A two-to-three-minute stand-in for CLIP's web pretraining, for the demo's tiny model.

The paper fine-tunes a CLIP that has seen 400 million captioned images: it already knows
which words go with which pictures, and what "blurry" looks like. A tiny CLIP from random
weights knows nothing; its image features of any two pictures start with a cosine of ~0.99,
and MOS regression alone does not teach it in a few hundred steps that "red" goes with red.
So the demo first pretrains it on a pool of freshly rendered pictures of the synthetic
grammar (never the demo's MOS images), half of them degraded, with three losses:

* CLIP's symmetric contrastive loss between pictures and their captions: the prompt, and for
  a degraded picture how it looks ("a very blurry picture of two red circles on a blue
  background"), as web captions sometimes say. Batches come in runs of pictures that share
  colour and background, so that shape and count must be told apart too;
* a look loss: each picture against nine short texts of how pictures look ("a picture",
  "a slightly grainy picture", ...), which CLIP learns from the web;
* a prompt-swap loss on the method's own five level texts: clean pictures against their own
  prompt, labelled "perfectly", pictures against a prompt altered in one attribute, labelled
  "badly" (cross-entropy over the five levels). This teaches what the level words mean; with
  the contrastive loss alone "badly matches X" and "perfectly matches X" stay indistinguishable.

No MOS is used here, and no level is given to a degraded picture of its own prompt: how much
a defect costs is left to the fine-tuning with the paper's protocol.

AdamW with a short linear warm-up and a cosine decay to zero: the losses are still falling
when the budget ends, and the decay settles them lower than a constant rate does.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ipce.models.correspondence import CorrespondenceScorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 1000
    batch: int = 32  # pictures per step; half get their own prompt, half an altered one
    lr: float = 1e-3
    weight_decay: float = 0.1
    size: int = 224  # pictures are squeezed to the model's input size, as the global view is
    pool: int = 1000  # pictures rendered once and drawn from at every step (rendering is slow)
    degrade_rate: float = 0.5  # share of pool pictures given a quality defect
    quality_captions: bool = True  # captions of degraded pictures say how they look
    swap_clean_only: bool = True  # the prompt-swap loss sees only clean pictures
    look_loss: bool = True  # each picture against the texts of how pictures look
    group: int = 4  # pictures per batch that share colour and background (1: drawn independently)
    warmup: int = 25  # steps of linear warm-up
    decay: bool = True  # cosine decay of the rate to zero (ends the losses far lower than a constant rate)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def render_pool(count: int, size: int, rng: np.random.Generator, degrade_rate: float = 0.5):
    """`count` pictures as uint8 [count, 3, size, size] and the attributes of their prompts.

    Drawn at the sizes the synthetic dataset draws, some blurred, noisy, JPEG-compressed or
    flat (a random defect and severity, recorded as ``attrs[i]["look"]``), then squeezed to
    size x size exactly as the scorer's global view is (bilinear, no antialiasing)."""
    from ipce.demo.synthetic import QUALITY_KINDS, SyntheticConfig, degrade, draw_size, make_prompt, render

    sizes = SyntheticConfig()
    pictures, attrs = torch.empty((count, 3, size, size), dtype=torch.uint8), []
    for i in range(count):
        _, drawn = make_prompt(rng)
        picture = render(drawn, draw_size(sizes, rng), rng)
        drawn = {**drawn, "look": None}
        if rng.random() < degrade_rate:
            kind, severity = QUALITY_KINDS[rng.integers(len(QUALITY_KINDS))], float(rng.random())
            picture, _ = degrade(picture, kind, severity, rng)
            drawn["look"] = (kind, severity)
        pictures[i] = squeeze(picture, size)
        attrs.append(drawn)
    return pictures, attrs


def squeeze(picture, size: int) -> torch.Tensor:
    """An RGB picture as uint8 [3, size, size], resized as the scorer's global view is resized
    (bilinear, align_corners=False, no antialiasing: resizing commutes with normalizing)."""
    pixels = torch.from_numpy(np.asarray(picture.convert("RGB")).copy()).permute(2, 0, 1)
    squeezed = F.interpolate(pixels[None].float(), size=(size, size), mode="bilinear", align_corners=False)
    return squeezed[0].round().clamp(0, 255).to(torch.uint8)


LOOK_WORDS = {"blur": "blurry", "noise": "grainy", "jpeg": "blocky", "contrast": "washed-out"}


def look_texts() -> list[str]:
    """How a picture looks, in words: "a picture", then "a slightly blurry picture", ... """
    return ["a picture"] + [f"a {adverb} {word} picture" for word in LOOK_WORDS.values()
                            for adverb in ("slightly", "very")]


def look_index(look) -> int:
    """The index in look_texts() of a pool picture's look (None: clean)."""
    if look is None:
        return 0
    kind, severity = look
    return 1 + 2 * list(LOOK_WORDS).index(kind) + int(severity >= 0.5)


def caption(attrs: dict, quality: bool = True) -> str:
    """The caption of a pool picture: its prompt, and for a degraded one how it looks, as web
    captions sometimes say ("a very blurry picture of two red circles on a blue background")."""
    from ipce.demo.synthetic import prompt_text

    prompt = prompt_text(attrs)
    look = attrs.get("look")
    if not quality or look is None:
        return prompt
    kind, severity = look
    return f"a {'slightly' if severity < 0.5 else 'very'} {LOOK_WORDS[kind]} picture of {prompt}"


@dataclass
class Batch:
    pictures: torch.Tensor  # normalized, [B, 3, size, size]
    captions: list[str]  # for the contrastive loss
    prompts: list[str]  # bare prompts: the first half's own, for the prompt-swap loss
    altered: list[str]  # each prompt altered in one attribute: the second half's, for the swap loss
    looks: torch.Tensor  # long [B]: look_index of each picture (0: clean)


def draw_pictures(attrs: list[dict], batch: int, rng: np.random.Generator, group: int = 1) -> np.ndarray:
    """Indices of `batch` distinct pool pictures, in runs of `group` that share colour and
    background: told apart only by shape and count, which the contrastive loss would otherwise
    never need (colour and background alone nearly name a random caption)."""
    if group <= 1:
        return rng.choice(len(attrs), size=batch, replace=False)
    alike: dict[tuple, list[int]] = {}
    for i, a in enumerate(attrs):
        alike.setdefault((a["colour"], a["background"]), []).append(i)
    combos = list(alike.values())
    chosen: list[int] = []
    for c in rng.permutation(len(combos)):  # a pool too small for full runs gives shorter ones
        take = min(group, batch - len(chosen), len(combos[c]))
        chosen.extend(int(i) for i in rng.choice(combos[c], size=take, replace=False))
        if len(chosen) == batch:
            return np.asarray(chosen)
    raise ValueError(f"a pool of {len(attrs)} pictures is too small for batches of {batch}")


def draw_batch(pool: torch.Tensor, attrs: list[dict], batch: int, rng: np.random.Generator,
               quality_captions: bool = True, group: int = 1) -> Batch:
    """A batch from the pool: normalized pictures, their captions and prompts and, for each, a
    prompt that differs in one attribute (colour, shape, count or background; drawn afresh)."""
    from ipce.demo.synthetic import MISALIGN_KINDS, alter_attrs, prompt_text
    from ipce.models.views import normalize_pixels

    chosen = draw_pictures(attrs, batch, rng, group)
    kinds = rng.integers(len(MISALIGN_KINDS), size=batch)
    return Batch(
        pictures=normalize_pixels(pool[torch.from_numpy(chosen)]),
        captions=[caption(attrs[i], quality_captions) for i in chosen],
        prompts=[prompt_text(attrs[i]) for i in chosen],
        altered=[prompt_text(alter_attrs(attrs[i], MISALIGN_KINDS[k], rng)) for i, k in zip(chosen, kinds)],
        looks=torch.tensor([look_index(attrs[i].get("look")) for i in chosen]),
    )


def encode_texts(model: CorrespondenceScorer, texts: list[str], device: torch.device) -> torch.Tensor:
    """Normalized text features [len(texts), D] of plain texts (not the level texts)."""
    return F.normalize(model.encode_tokens(model.tokenizer(texts).to(device)).float(), dim=-1)


def pretrain_loss(model: CorrespondenceScorer, batch: Batch, swap_clean_only: bool = True,
                  look_loss: bool = True) -> tuple[torch.Tensor, dict]:
    """Contrastive + prompt-swap + look loss (module docstring) of one batch."""
    clip = model.clip
    device = batch.pictures.device
    scale = clip.logit_scale.exp().float()
    size = len(batch.prompts)
    image = F.normalize(clip.encode_image(batch.pictures).float(), dim=-1)
    logits = scale * image @ encode_texts(model, batch.captions, device).T
    # the same caption twice in a batch is not a negative
    same = torch.tensor([[a == b for b in batch.captions] for a in batch.captions], device=device)
    logits = logits.masked_fill(same & ~torch.eye(size, dtype=torch.bool, device=device), float("-inf"))
    target = torch.arange(size, device=device)
    contrastive = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    half = size // 2
    own = torch.arange(size, device=device) < half
    labels = torch.where(own, len(model.levels) - 1, 0)
    # A degraded picture of its own prompt is not labelled "perfectly": how well it matches is
    # for the fine-tuning to learn from MOS, not for the stand-in to decide.
    counted = ~(own & (batch.looks > 0).to(device)) if swap_clean_only else torch.ones_like(own)
    # Only the counted pictures' level texts are encoded: the text tower is ~40 % of a step's
    # time, and a quarter of the batch is not counted.
    rows = counted.nonzero().squeeze(1)
    if len(rows) == 0:
        swap = image.sum() * 0
    else:
        prompts = batch.prompts[:half] + batch.altered[half:]
        texts = model.text_features([prompts[i] for i in rows.tolist()]).float()  # [rows, K, D]
        swap = F.cross_entropy(scale * torch.einsum("bd,bkd->bk", image[rows], texts), labels[rows])
    parts = {"contrastive": contrastive.item(), "swap": swap.item()}
    total = contrastive + swap
    if look_loss:
        look = F.cross_entropy(scale * image @ encode_texts(model, look_texts(), device).T, batch.looks.to(device))
        parts["look"] = look.item()
        total = total + look
    return total, parts


def plain_attention(device: torch.device):
    """On the CPU, attention as plain matmuls: for the tiny towers' short sequences (~20 tokens,
    50 in the image pooling) the fused kernels' backward is slower; the step is ~20 % faster."""
    return sdpa_kernel([SDPBackend.MATH]) if device.type == "cpu" else contextlib.nullcontext()


def pretrain_lr(config: PretrainConfig, step: int) -> float:
    """The rate of `step` (1-based): linear warm-up, then constant or cosine decay to zero."""
    if step <= config.warmup:
        return config.lr * step / config.warmup
    if not config.decay:
        return config.lr
    done = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (1 + math.cos(math.pi * done)) / 2


def pretrain_optimizer(model: CorrespondenceScorer, config: PretrainConfig) -> torch.optim.AdamW:
    """AdamW over the weights the pretraining trains. The token embedding (49408 x 128: 90 % of
    the tiny model's weights) stays as drawn: random vectors already tell the words apart, and
    its dense AdamW update costs ~7x the rest's."""
    model.clip.token_embedding.weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def pretrain_step(model: CorrespondenceScorer, optimizer: torch.optim.Optimizer, pool: torch.Tensor, attrs: list[dict],
                  rng: np.random.Generator, config: PretrainConfig, precision: str, device: torch.device) -> dict:
    """One step at the optimizer's current rate: a batch drawn from the pool, its losses
    (`pretrain_loss`), backward, update. Returns the losses' parts."""
    from ipce.utils.precision import autocast

    batch = draw_batch(pool, attrs, config.batch, rng, config.quality_captions, config.group)
    memory_format = torch.channels_last if model.channels_last else torch.contiguous_format
    batch.pictures = batch.pictures.to(device, memory_format=memory_format)
    with autocast(device, precision), plain_attention(device):
        loss, parts = pretrain_loss(model, batch, config.swap_clean_only, config.look_loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return parts


def pretrain(model: CorrespondenceScorer, config: PretrainConfig = PretrainConfig(), precision: str = "fp32",
             device: torch.device | str = "cpu", channels_last: bool = False,
             progress: bool = False) -> list[dict]:
    """Pretrain `model` in place (AdamW at pretrain_lr's rates); returns the losses every 50 steps.
    `channels_last`: ipce.models.speed.use_channels_last, kept on the returned model. `progress`:
    a bar of the steps with rate and ETA (it draws no random numbers: the weights are the same)."""
    from ipce.models.speed import use_channels_last
    from ipce.utils.progress import progress_bar

    device = torch.device(device)
    model.to(device).train()
    if channels_last:
        use_channels_last(model)
    rng = np.random.default_rng(config.seed)
    pool, attrs = render_pool(config.pool, config.size, rng, config.degrade_rate)
    trainable = model.clip.token_embedding.weight.requires_grad
    optimizer = pretrain_optimizer(model, config)
    history, window, started = [], [], time.perf_counter()
    bar = progress_bar(total=config.steps, desc="pretraining", unit="step", enabled=progress)
    for step in range(1, config.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = pretrain_lr(config, step)
        parts = pretrain_step(model, optimizer, pool, attrs, rng, config, precision, device)
        window.append(parts)
        bar.update()
        if step % 50 == 0 or step == config.steps:
            mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            history.append({"step": step, **mean})
            window = []
            bar.set_postfix(contrastive=f"{mean['contrastive']:.3f}", refresh=False)
            log.info("pretrain step %d/%d: contrastive %.3f  swap %.3f  look %.3f  (%.0f s)", step, config.steps,
                     mean["contrastive"], mean["swap"], mean.get("look", 0), time.perf_counter() - started)
    bar.close()
    model.clip.token_embedding.weight.requires_grad_(trainable)
    model.eval()
    return history
