"""The image-prompt correspondence scorer (DESIGN.md section 1).

Five texts per prompt, "a photo that {level} matches '{prompt}'"; every view of an image is
compared with its own five texts only; softmax over levels per view type; the mean of the
crop and global distributions; the expected level mapped to 0..5.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = ("badly", "poorly", "fairly", "well", "perfectly")
TEMPLATE = "a photo that {level} matches '{prompt}'"


def level_texts(prompt: str, template: str = TEMPLATE, levels=LEVELS) -> list[str]:
    return [template.format(level=level, prompt=prompt) for level in levels]


def score_from_probs(probs: torch.Tensor) -> torch.Tensor:
    """Expected level (1..K) of a distribution over K levels, mapped linearly to 0..5."""
    k = probs.shape[-1]
    levels = torch.arange(1, k + 1, dtype=probs.dtype, device=probs.device)
    expected = (probs * levels).sum(-1)
    return (expected - 1) / (k - 1) * 5


class CorrespondenceScorer(nn.Module):
    """A CLIP model that scores (image views, prompt) pairs on 0..5.

    `logit_scale` is frozen; everything else trains. In eval mode the text features of a
    prompt are cached (they only change when the weights do; `train()` clears the cache).
    """

    def __init__(self, clip: nn.Module, template: str = TEMPLATE, levels=LEVELS):
        super().__init__()
        import open_clip

        self.clip = clip
        self.template = template
        self.levels = tuple(levels)
        self.clip.logit_scale.requires_grad_(False)
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(
            context_length=clip.positional_embedding.shape[0])
        self.eot_id = self.tokenizer.eot_token_id
        self.cache_texts = True
        self._text_cache: dict[str, torch.Tensor] = {}

    # -- text ----------------------------------------------------------------------------
    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Token ids [len(prompts) * K, context], truncated with end-of-text kept last."""
        texts = [t for p in prompts for t in level_texts(p, self.template, self.levels)]
        return self.tokenizer(texts)

    def encode_tokens(self, tokens: torch.Tensor, cut_padding: bool = True) -> torch.Tensor:
        """Unnormalized text features. The text tower is causal and pools at end-of-text, so
        dropping the padding after the longest end-of-text changes nothing but the cost."""
        clip = self.clip
        eot_pos = tokens.argmax(dim=-1)  # end-of-text has the largest id
        length = int(eot_pos.max()) + 1 if cut_padding else tokens.shape[1]
        tokens = tokens[:, :length]
        x = clip.token_embedding(tokens) + clip.positional_embedding[:length]
        mask = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None
        x = clip.transformer(x, attn_mask=mask)
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_pos]
        proj = clip.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    def text_features(self, prompts: list[str], cut_padding: bool = True) -> torch.Tensor:
        """Normalized features [B, K, D] of each prompt's K level texts."""
        device = self.clip.positional_embedding.device
        use_cache = self.cache_texts and not self.training and not torch.is_grad_enabled()
        if not use_cache:
            tokens = self.tokenize(prompts).to(device)
            feats = F.normalize(self.encode_tokens(tokens, cut_padding).float(), dim=-1)
            return feats.view(len(prompts), len(self.levels), -1)
        missing = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        if missing:
            tokens = self.tokenize(missing).to(device)
            feats = F.normalize(self.encode_tokens(tokens, cut_padding).float(), dim=-1)
            for prompt, feat in zip(missing, feats.view(len(missing), len(self.levels), -1)):
                self._text_cache[prompt] = feat
        return torch.stack([self._text_cache[p] for p in prompts])

    def train(self, mode: bool = True):
        self._text_cache.clear()
        return super().train(mode)

    # -- images --------------------------------------------------------------------------
    def image_features(self, crops: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
        """Normalized features [B, P+1, D]: the P crops then the global view, one encoder call."""
        batch, patches = crops.shape[:2]
        views = torch.cat([crops, glob[:, None]], dim=1).flatten(0, 1)
        feats = self.clip.encode_image(views)
        return F.normalize(feats.float(), dim=-1).view(batch, patches + 1, -1)

    # -- scores --------------------------------------------------------------------------
    def level_probs(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """q = (softmax(mean crop logits) + softmax(global logits)) / 2, shape [B, K]."""
        logits = self.clip.logit_scale.exp().float() * torch.einsum("bvd,bkd->bvk", image_feats, text_feats)
        q_patch = logits[:, :-1].mean(dim=1).softmax(dim=-1)
        q_glob = logits[:, -1].softmax(dim=-1)
        return (q_patch + q_glob) / 2

    def forward(self, crops: torch.Tensor, glob: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Scores [B] on 0..5 for crops [B, P, 3, 224, 224], global views [B, 3, 224, 224]."""
        probs = self.level_probs(self.image_features(crops, glob), self.text_features(prompts))
        return score_from_probs(probs)
