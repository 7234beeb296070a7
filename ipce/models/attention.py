"""Attention through `F.scaled_dot_product_attention`, batch-first, from the same weights.

open_clip's residual blocks call `nn.MultiheadAttention`, whose general path (training, autocast,
a float mask) goes sequence-first through `F.multi_head_attention_forward`: transposes and copies
around the attention kernel, and the text tower's float causal mask rules out the flash kernels
on CUDA. `SdpaAttention` is the same module (a subclass: the same `in_proj_weight`,
`in_proj_bias`, `out_proj.*` parameters and state-dict keys, so checkpoints and ONNX exports are
unaffected) whose forward projects batch-first, calls SDPA once per block, and, in the text
tower, passes `is_causal=True` instead of the mask. `use_sdpa` switches every attention of a
scorer's two towers in place, or back. Equal to `nn.MultiheadAttention` within float rounding,
forward and gradients (tests/test_attention.py).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

ATTENTIONS = ("mha", "sdpa")


class SdpaAttention(nn.MultiheadAttention):
    """`nn.MultiheadAttention` for self-attention through one SDPA call (see the module's text).

    `causal` (set by `use_sdpa` on the text tower's blocks): the mask the block is given is the
    causal mask of CLIP's text tower, so it is replaced by `is_causal=True`. Anything else
    (cross-attention, a key padding mask, attention weights asked for) takes the parent's path."""

    causal: bool = False

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        plain = (query is key and key is value and key_padding_mask is None and not need_weights
                 and self._qkv_same_embed_dim and self.bias_k is None and query.dim() == 3)
        if not plain:
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                   is_causal=is_causal)
        x = query if self.batch_first else query.transpose(0, 1)  # [B, L, D]
        batch, length, width = x.shape
        heads = self.num_heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
        causal = is_causal or (self.causal and attn_mask is not None)
        mask = None if causal else attn_mask
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                             dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, length, width)
        out = self.out_proj(out)
        return (out if self.batch_first else out.transpose(0, 1)), None


def _attentions(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, nn.MultiheadAttention)]


def use_sdpa(clip: nn.Module, enabled: bool = True) -> int:
    """Switch every `nn.MultiheadAttention` of a CLIP's two towers to `SdpaAttention` (or back
    with enabled=False), in place; parameters untouched. The text transformer's blocks are causal
    (`clip.transformer`; the image tower has no mask). Returns how many modules it switched."""
    text = {id(m) for m in _attentions(clip.transformer)} if hasattr(clip, "transformer") else set()
    count = 0
    for module in _attentions(clip):
        if module.bias_k is not None or not module._qkv_same_embed_dim:
            continue  # layouts CLIP does not use: left as they are
        if enabled:
            module.__class__ = SdpaAttention
            module.causal = id(module) in text
        elif isinstance(module, SdpaAttention):
            module.__class__ = nn.MultiheadAttention
            module.__dict__.pop("causal", None)
        count += 1
    log.debug("attention: %d modules %s", count, "through SDPA" if enabled else "as nn.MultiheadAttention")
    return count
