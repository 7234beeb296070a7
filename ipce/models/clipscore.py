"""CLIPScore, the baseline every text-to-image paper reports, as a scorer beside ipce's models.

`CLIPScore(I, p) = max(100 * cos(E_I, E_p), 0)` with CLIP's image embedding of the image (its own
input: shorter side to 224, bicubic, the centre 224x224) and its text embedding of the prompt as
written (truncated to 77 tokens, end-of-text kept), as torchmetrics computes it per image. A
`ClipScoreModel` answers on the model's 0..5 (`5 * max(cos, 0)`) and its metadata's `mos_range`
is 0..100, so a `Scorer` maps it back to `100 * max(cos, 0)`; every command takes it as
`--checkpoint clipscore:NAME` (a backbone name: ViT-B-32, ViT-L-14, ...).
"""
from __future__ import annotations

import torch

from ipce.models.correspondence import CorrespondenceScorer

PREFIX = "clipscore:"
RANGE = (0.0, 100.0)


class ClipScoreModel(CorrespondenceScorer):
    """CLIP scoring an image by the cosine of its embedding with its prompt's, on 0..5 (see module).

    One text per prompt (the template is the prompt itself); text features are cached and run beside
    the image tower as the correspondence scorer's; the views are "clip" mode's (no crops)."""

    def __init__(self, clip: torch.nn.Module):
        super().__init__(clip, template="{prompt}", levels=("",))

    def forward(self, crops: torch.Tensor, global_view: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if self.overlap_text and not torch.is_grad_enabled():
            texts = self._text_features_in_background(prompts)
            image_feats = self.encode_views(global_view)
            text_feats = texts.result()
        else:
            image_feats, text_feats = self.encode_views(global_view), self.text_features(prompts)
        with torch.autocast(image_feats.device.type, enabled=False):
            cosine = (image_feats.float() * text_feats[:, 0].float()).sum(-1)
        return cosine.clamp(min=0) * 5


def is_clipscore(name) -> bool:
    return str(name).lower().startswith(PREFIX)


def backbone_of(name: str) -> str:
    return str(name)[len(PREFIX):]
