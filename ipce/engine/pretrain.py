"""A one-minute stand-in for CLIP's web pretraining, for the demo's tiny model.

The paper fine-tunes a CLIP that has seen 400 million captioned images: it already knows
which words go with which pictures. A tiny CLIP from random weights knows nothing; its image
features of any two pictures start with a cosine of ~0.99, and MOS regression alone does not
teach it in a few hundred steps that "red" goes with red (the demo then reached a pair
accuracy of 51 %). So the demo first pretrains it, on freshly rendered clean pictures of the
synthetic grammar (never the demo's MOS images), with two losses:

* CLIP's symmetric contrastive loss between pictures and their bare prompts (which words go
  with which pictures);
* a prompt-swap loss on the method's own five level texts: half the batch against its own
  prompt, labelled "perfectly", half against a prompt altered in one attribute, labelled
  "badly" (cross-entropy over the five levels). This teaches what the level words mean; the
  contrastive loss alone left "badly matches X" and "perfectly matches X" indistinguishable.

No MOS, no quality defect and no image of the demo's dataset is used here: quality is left
entirely to the fine-tuning with the paper's protocol.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ipce.models.correspondence import CorrespondenceScorer


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 1000
    batch: int = 32  # pictures per step; half get their own prompt, half an altered one
    lr: float = 1e-3
    weight_decay: float = 0.1
    size: int = 224  # pictures are squeezed to the model's input size, as the global view is
    pool: int = 1000  # pictures rendered once and drawn from at every step (rendering is slow)
    degrade_rate: float = 0.5  # share of pool pictures given a quality defect
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def render_pool(count: int, size: int, rng: np.random.Generator, degrade_rate: float = 0.5):
    """`count` pictures as uint8 [count, 3, size, size] and the attributes of their prompts.

    Like web pictures, they vary in aspect ratio and quality: drawn at sides of 1 to 2 times
    `size`, some blurred, noisy, JPEG-compressed or flat (a random defect and severity), then
    squeezed to size x size as the scorer's global view is. The caption stays true either way:
    what a picture shows does not depend on how good it looks."""
    from PIL import Image

    from ipce.datasets.synthetic import QUALITY_KINDS, degrade, make_prompt, render

    pictures, attrs = torch.empty((count, 3, size, size), dtype=torch.uint8), []
    for i in range(count):
        _, drawn = make_prompt(rng)
        width, height = (int(side) for side in rng.integers(size, 2 * size + 1, size=2))
        picture = render(drawn, (width, height), rng)
        if rng.random() < degrade_rate:
            picture, _ = degrade(picture, QUALITY_KINDS[rng.integers(len(QUALITY_KINDS))], float(rng.random()), rng)
        pixels = np.asarray(picture.convert("RGB").resize((size, size), Image.BILINEAR))
        pictures[i] = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
        attrs.append(drawn)
    return pictures, attrs


def draw_batch(pool: torch.Tensor, attrs: list[dict], batch: int, rng: np.random.Generator):
    """A batch from the pool: normalized pictures, their prompts and, for each, a prompt that
    differs in one attribute (colour, shape, count or background; drawn afresh every time)."""
    from ipce.datasets.synthetic import MISALIGN_KINDS, _alter, prompt_text
    from ipce.datasets.views import normalize_pixels

    chosen = rng.choice(len(attrs), size=batch, replace=False)
    pictures = normalize_pixels(pool[torch.from_numpy(chosen)])
    prompts = [prompt_text(attrs[i]) for i in chosen]
    kinds = rng.integers(len(MISALIGN_KINDS), size=batch)
    altered = [prompt_text(_alter(attrs[i], MISALIGN_KINDS[k], rng)) for i, k in zip(chosen, kinds)]
    return pictures, prompts, altered


def pretrain_loss(model: CorrespondenceScorer, pictures: torch.Tensor, prompts: list[str],
                  altered: list[str]) -> tuple[torch.Tensor, dict]:
    """Contrastive loss + prompt-swap loss (module docstring) of one batch."""
    clip = model.clip
    scale = clip.logit_scale.exp().float()
    batch, half = len(prompts), len(prompts) // 2
    image = F.normalize(clip.encode_image(pictures).float(), dim=-1)
    device = pictures.device
    caption = F.normalize(model.encode_tokens(model.tokenizer(prompts).to(device)).float(), dim=-1)
    logits = scale * image @ caption.T
    # the same prompt twice in a batch is not a negative
    same = torch.tensor([[a == b for b in prompts] for a in prompts], device=device)
    logits = logits.masked_fill(same & ~torch.eye(batch, dtype=torch.bool, device=device), float("-inf"))
    target = torch.arange(batch, device=device)
    contrastive = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    texts = model.text_features(prompts[:half] + altered[half:]).float()  # [B, K, D]
    level_logits = scale * torch.einsum("bd,bkd->bk", image, texts)
    levels = len(model.levels)
    labels = torch.tensor([levels - 1] * half + [0] * (batch - half), device=device)
    swap = F.cross_entropy(level_logits, labels)
    return contrastive + swap, {"contrastive": contrastive.item(), "swap": swap.item()}


def pretrain(model: CorrespondenceScorer, config: PretrainConfig = PretrainConfig(), precision: str = "fp32",
             device: torch.device | str = "cpu", log=print) -> list[dict]:
    """Pretrain `model` in place (AdamW, constant rate); returns the losses every 50 steps."""
    from ipce.api import autocast

    device = torch.device(device)
    model.to(device).train()
    rng = np.random.default_rng(config.seed)
    pool, attrs = render_pool(config.pool, config.size, rng, config.degrade_rate)
    # The token embedding (49408 x 128: 90 % of the tiny model's weights) stays as drawn: random
    # vectors already tell the words apart, and its dense AdamW update was ~7x the rest's cost.
    embedding = model.clip.token_embedding.weight
    trainable = embedding.requires_grad
    embedding.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    history, window, started = [], [], time.perf_counter()
    for step in range(1, config.steps + 1):
        pictures, prompts, altered = draw_batch(pool, attrs, config.batch, rng)
        with autocast(device, precision):
            loss, parts = pretrain_loss(model, pictures.to(device), prompts, altered)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(parts)
        if step % 50 == 0 or step == config.steps:
            mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            history.append({"step": step, **mean})
            window = []
            log(f"pretrain step {step}/{config.steps}: contrastive {mean['contrastive']:.3f}  "
                f"swap {mean['swap']:.3f}  ({time.perf_counter() - started:.0f} s)")
    embedding.requires_grad_(trainable)
    model.eval()
    return history
