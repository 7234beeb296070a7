"""The score as a differentiable reward: evaluation views made with tensor ops from pixels, the
scorer's forward pass with gradients, and the callable RL fine-tuning code for diffusion models
takes, `(images, prompts, metadata) -> (rewards, metadata)`.
"""
from __future__ import annotations

import numpy as np
import torch

from ipce.models.views import ViewConfig, tensor_views
from ipce.errors import IpceError
from ipce.models.correspondence import CorrespondenceScorer


def view_scores(model: CorrespondenceScorer, pixels: torch.Tensor, config: ViewConfig, texts: list[str]) -> torch.Tensor:
    """Scores [B] on 0..5 of float pixels [B, 3, H, W] in 0..1 under the model's evaluation views, with
    gradients to the pixels and the model wherever grad mode is on."""
    crops, global_views = tensor_views(pixels.float(), config)
    return model(crops, global_views, texts)


def to_pixels(images) -> torch.Tensor:
    """Float pixels [B, 3, H, W] in 0..1 from a batch of images: uint8 (0..255) or float (0..1),
    NCHW or NHWC (three channels on axis 1 or 3; axis 1 wins when both have three), a torch tensor
    (gradients kept) or a numpy array."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise IpceError(f"reward: images must be a torch tensor or a numpy array, not {type(images).__name__}")
    if images.ndim == 3:  # one image
        images = images[None]
    if images.ndim != 4 or 3 not in (images.shape[1], images.shape[3]):
        raise IpceError(f"reward: images of shape {tuple(images.shape)}; expected [B, 3, H, W] or [B, H, W, 3]")
    if images.shape[1] != 3:
        images = images.permute(0, 3, 1, 2)
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise IpceError(f"reward: images of dtype {images.dtype}; give uint8 (0..255) or float (0..1)")
    return images


class RewardFn:
    """`(images, prompts, metadata=None) -> (rewards [B], metadata)` over a scorer's `reward_detailed`.

    Rewards are float32 on the images' device. They carry gradients when the images require them
    (a generator fine-tuned through the reward); otherwise they are computed without a graph, as
    policy-gradient code wants them (for gradients to the scorer's models, `Scorer.reward`). The
    metadata returned holds `per_model` [M, B] (an ensemble's members); the given one is not used."""

    def __init__(self, scorer):
        self.scorer = scorer

    def __call__(self, images, prompts=None, metadata=None):
        pixels = to_pixels(images)
        with torch.set_grad_enabled(torch.is_grad_enabled() and pixels.requires_grad):
            rewards, per_model = self.scorer.reward_detailed(pixels, prompts)
        return rewards, {"per_model": per_model}
