"""The quality map of one image: every 224x224 crop of a grid scored from its own level
distribution, beside the method's final score (DESIGN.md section 1) from the same features.

The crops at the method's evaluation positions are a subset of the grid at the method's own
stride, so their features are computed once; at another stride they are added to the views.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from ipce.models.views import CROP, ViewConfig, adaptive_resize, crop_positions, global_view, grid_positions
from ipce.models.views import crop_grid, to_normalized_tensor
from ipce.models.correspondence import CorrespondenceScorer, probs_from_logits, score_from_probs


@dataclass
class ModelMaps:
    """Per-model scores of a grid, on the model's 0..5: crops [M, N], global views [M], final [M]."""
    boxes: list[tuple[float, float, float]]  # (x, y, size) of each grid crop in the original image's pixels
    crop_scores: torch.Tensor
    global_scores: torch.Tensor
    final_scores: torch.Tensor
    stride: int


def quality_map(image: Image.Image, models: list[CorrespondenceScorer], views: list[ViewConfig], texts: list[str],
                stride: int | None = None, device: torch.device | str = "cpu", batch_size: int = 16,
                progress: bool = False) -> ModelMaps:
    """The grid of `image` (RGB) for each model with its view settings and its text (one resize for
    all), crops encoded `batch_size` at a time; call under no_grad and the caller's autocast."""
    from ipce.utils.progress import progress_bar

    resized = adaptive_resize(image, views[0].resize)
    tensor = to_normalized_tensor(resized)
    height, width = tensor.shape[-2:]
    grid = grid_positions(height, width, stride)
    evaluation = [crop_positions(height, width, v.patches, train=False) for v in views]
    positions = list(dict.fromkeys(grid + [p for each in evaluation for p in each]))
    where = {p: i for i, p in enumerate(positions)}
    crops = [tensor[:, top:top + CROP, left:left + CROP] for top, left in positions] + [global_view(tensor)]
    last = len(crops) - 1  # the global view
    crop_scores, global_scores, final_scores = [], [], []
    with progress_bar(total=len(crops) * len(models), desc="explain", unit="crop", enabled=progress,
                      leave=False) as bar:
        for model, chosen, text in zip(models, evaluation, texts):
            model.eval()
            feats = []
            for start in range(0, len(crops), batch_size):
                part = torch.stack(crops[start:start + batch_size]).to(device)
                feats.append(model.encode_views(part))
                bar.update(len(part))
            logits = model.similarities(torch.cat(feats)[None], model.text_features([text]))[0]  # [views, K]
            with torch.autocast(logits.device.type, enabled=False):
                each = score_from_probs(logits.softmax(dim=-1)).cpu()
                final = score_from_probs(probs_from_logits(logits[[where[p] for p in chosen] + [last]][None]))[0]
            crop_scores.append(each[[where[p] for p in grid]])
            global_scores.append(each[last])
            final_scores.append(final.cpu())
    sx, sy = image.width / width, image.height / height
    boxes = [(left * sx, top * sy, CROP * sx) for top, left in grid]
    return ModelMaps(boxes, torch.stack(crop_scores), torch.stack(global_scores), torch.stack(final_scores),
                     stride if stride is not None else crop_grid(height, width)[2])
