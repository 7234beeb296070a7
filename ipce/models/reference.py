"""A deliberately plain re-implementation of the original code's evaluation.

Used by the tests (the scorer must agree with it) and by the benchmarks (it is the
"straightforward" baseline): torchvision transforms, every 224x224 window of the image
copied out before choosing, every view of the batch compared with every text of the batch
(padded to 77 tokens, no cache), then the diagonal blocks kept. Not used for real work.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from ipce.models.correspondence import LEVELS, TEMPLATE
from ipce.models.views import CLIP_MEAN, CLIP_STD

MEAN, STD = CLIP_MEAN, CLIP_STD


def original_transform(resize: int):
    def adaptive(img: Image.Image) -> Image.Image:
        w, h = img.size
        if h < resize or w < resize:
            return transforms.Resize(resize, interpolation=transforms.InterpolationMode.BILINEAR)(img)
        return img

    return transforms.Compose([adaptive, transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def all_windows(img: torch.Tensor) -> torch.Tensor:
    """Every 224x224 window, row-major, as copies [N, 3, 224, 224] (what the original code does)."""
    _, h, w = img.shape
    stride = 48 if h >= 1024 or w >= 1024 else 32
    windows = img.unfold(1, 224, stride).unfold(2, 224, stride)  # [3, rows, cols, 224, 224]
    return windows.permute(1, 2, 0, 3, 4).reshape(-1, 3, 224, 224).clone()


def original_views(img: Image.Image, resize: int, patches: int) -> tuple[torch.Tensor, torch.Tensor]:
    tensor = original_transform(resize)(img.convert("RGB"))
    windows = all_windows(tensor)
    step = windows.shape[0] // patches
    crops = windows[[step * i for i in range(patches)]]
    global_view = F.interpolate(tensor[None], size=(224, 224), mode="bilinear", align_corners=False)[0]
    return crops, global_view


@torch.no_grad()
def original_scores(clip, images: list[Image.Image], prompts: list[str], resize: int = 512,
                patches: int = 15) -> torch.Tensor:
    """Scores of a batch, computed the original code's way (full batch similarity, diagonal blocks)."""
    import open_clip

    tokenizer = open_clip.tokenizer.SimpleTokenizer()
    views = [original_views(im, resize, patches) for im in images]
    batch, levels = len(images), len(LEVELS)
    texts = [TEMPLATE.format(level=lv, prompt=p) for p in prompts for lv in LEVELS]
    text_feats = F.normalize(clip.encode_text(tokenizer(texts)), dim=-1)  # [B*5, D]
    crops = torch.cat([c for c, _ in views])  # [B*P, 3, 224, 224]
    global_views = torch.stack([g for _, g in views])  # [B, 3, 224, 224]
    scale = clip.logit_scale.exp()
    patch_logits = scale * F.normalize(clip.encode_image(crops), dim=-1) @ text_feats.T  # [B*P, B*5]
    global_logits = scale * F.normalize(clip.encode_image(global_views), dim=-1) @ text_feats.T  # [B, B*5]
    scores = []
    for i in range(batch):
        block = patch_logits[i * patches:(i + 1) * patches, i * levels:(i + 1) * levels]
        q_patch = block.mean(0).softmax(-1)
        q_glob = global_logits[i, i * levels:(i + 1) * levels].softmax(-1)
        q = (q_patch + q_glob) / 2
        expected = sum((k + 1) * q[k] for k in range(levels))
        scores.append((expected - 1) / 4 * 5)
    return torch.stack(scores)
