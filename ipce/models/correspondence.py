"""The image-prompt correspondence scorer (DESIGN.md section 1).

Five texts per prompt, "a photo that {level} matches '{prompt}'"; every view of an image is
compared with its own five texts only; softmax over levels per view type; the mean of the
crop and global distributions; the expected level mapped to 0..5.
"""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import Future, ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

from ipce.models.texts import LEVELS, TEMPLATE


def level_texts(prompt: str, template: str = TEMPLATE, levels=LEVELS) -> list[str]:
    return [template.format(level=level, prompt=prompt) for level in levels]


def length_groups(lengths: list[int], rows_per_item: int, overhead: int) -> list[list[int]]:
    """Split items (prompts) into groups encoded together, each padded to its longest member.

    Minimizes sum over groups of (items * rows_per_item * longest length + overhead), where
    `overhead` is the cost of one more encoder call in token rows; exact by dynamic
    programming over the items sorted by length. Returns lists of original indices.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = [0.0] + [float("inf")] * len(order)  # best[i]: cost of the i shortest items
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = lengths[order[end - 1]]
        for start in range(end):
            cost = best[start] + (end - start) * rows_per_item * longest + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], len(order)
    while end > 0:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]


QUICK_GELU_ALPHA = 1.702


class QuickGELUMLP(nn.Sequential):
    """open_clip's MLP (c_fc, QuickGELU, c_proj) with the activation folded into the matmuls.

    x * sigmoid(1.702 x) = silu(1.702 x) / 1.702, and both factors ride on the matrix
    products for free (addmm's alpha/beta), so the activation is one fused silu pass instead
    of three elementwise passes and three fresh tensors. Same parameters and state_dict keys;
    equal to the unfused MLP within float rounding (~5e-7 relative in fp32).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fc, proj = self.c_fc, self.c_proj
        shape = x.shape
        hidden = torch.addmm(fc.bias, x.reshape(-1, shape[-1]), fc.weight.t(),
                             beta=QUICK_GELU_ALPHA, alpha=QUICK_GELU_ALPHA)
        hidden = F.silu(hidden, inplace=not torch.is_grad_enabled())
        out = torch.addmm(proj.bias, hidden, proj.weight.t(), alpha=1 / QUICK_GELU_ALPHA)
        return out.view(*shape[:-1], out.shape[-1])


def fuse_quick_gelu(module: nn.Module, enabled: bool = True) -> int:
    """Switch every open_clip QuickGELU MLP below `module` to QuickGELUMLP (or back, with
    enabled=False), in place; parameters untouched. Returns how many MLPs it switched."""
    from open_clip.transformer import QuickGELU

    count = 0
    for sub in module.modules():
        if not isinstance(sub, nn.Sequential) or list(sub._modules) != ["c_fc", "gelu", "c_proj"]:
            continue
        if not (isinstance(sub.c_fc, nn.Linear) and isinstance(sub.c_proj, nn.Linear)
                and isinstance(sub.gelu, QuickGELU) and sub.c_fc.bias is not None and sub.c_proj.bias is not None):
            continue
        sub.__class__ = QuickGELUMLP if enabled else nn.Sequential
        count += 1
    return count


_TEXT_THREAD: ThreadPoolExecutor | None = None


def _text_thread() -> ThreadPoolExecutor:
    """The one thread that runs text towers beside the image tower (see `overlap_text`)."""
    global _TEXT_THREAD
    if _TEXT_THREAD is None:
        _TEXT_THREAD = ThreadPoolExecutor(1, thread_name_prefix="ipce-text")
    return _TEXT_THREAD


def _forget_text_thread() -> None:  # a forked child has the executor but not its thread
    global _TEXT_THREAD
    _TEXT_THREAD = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_text_thread)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor onto `device`; to CUDA through pinned memory without blocking the host."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def score_from_probs(probs: torch.Tensor) -> torch.Tensor:
    """Expected level (1..K) of a distribution over K levels, mapped linearly to 0..5."""
    k = probs.shape[-1]
    levels = torch.arange(1, k + 1, dtype=probs.dtype, device=probs.device)
    expected = (probs * levels).sum(-1)
    return (expected - 1) / (k - 1) * 5


def probs_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """q = (softmax(mean of the crops' logits) + softmax(the global view's logits)) / 2, [B, K],
    for logits [B, P+1, K] ordered crops then global view (DESIGN.md section 1, step 4)."""
    q_patch = logits[:, :-1].mean(dim=1).softmax(dim=-1)
    q_glob = logits[:, -1].softmax(dim=-1)
    return (q_patch + q_glob) / 2


class CorrespondenceScorer(nn.Module):
    """A CLIP model that scores (image views, prompt) pairs on 0..5.

    `logit_scale` is frozen; everything else trains. In eval mode the text features of a
    prompt are cached (they only change when the weights do; `train()` clears the cache).

    Speed switches (none changes a score beyond float rounding; benchmarks/README.md measures
    each): the QuickGELU MLPs of both towers run fused (`fuse_quick_gelu`, ~10 % faster image
    encoder on a CPU); `cache_texts`; `group_texts`, which encodes prompts of similar token length
    together so that short prompts are not padded to the longest of the batch;
    `overlap_text`: without gradients, the text tower runs on a second thread while this one
    runs the image tower (torch ops release the GIL), which hides it where a core is free
    (ViT-B-32 fp32, batch 16, 1 CPU thread: 0.99x the image tower's time alone beside it,
    1.11x after it; benchmarks/results/cpu-epyc-1thread-eval-overlap.json); `image_chunk`, the
    most views per image-encoder call without gradients on a CPU (there, intermediates of a
    few tens of MB are reused by the allocator, bigger ones are fresh zeroed pages on every
    call, so 256 views in one call are slower than 8 calls of 32; on CUDA the views always go
    in one call).
    Under autocast both towers run in the low precision (`text_autocast`, default True) and the
    similarities in fp32 (`level_probs`): for ViT-B-32 under bf16 at 1 CPU thread, 7 % faster
    than texts in fp32, scores within 0.011 (mean abs) of fp32 on 0..5 (texts in fp32: 0.002);
    benchmarks/README.md. Cached text features are kept per precision.
    """

    group_overhead = 64  # one more text-encoder call costs about this many token rows

    def __init__(self, clip: nn.Module, template: str = TEMPLATE, levels=LEVELS):
        super().__init__()
        import open_clip

        self.clip = clip
        fuse_quick_gelu(clip)
        self.template = template
        self.levels = tuple(levels)
        self.clip.logit_scale.requires_grad_(False)
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(
            context_length=clip.positional_embedding.shape[0])
        self.eot_id = self.tokenizer.eot_token_id
        self.cache_texts = True
        self.group_texts = True
        self.image_chunk: int | None = 32
        self.overlap_text = True
        self.text_autocast = True  # False: texts in fp32 even under autocast (no gradients only)
        self.channels_last = False  # set by ipce.models.speed.use_channels_last
        self.text_cache: dict = {}  # prompt (fp32) or (autocast dtype, prompt) -> features

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
        # token ids come from the tokenizer on the CPU: the cut is read there, and they travel after
        # it (pinned, asynchronously on CUDA), so a step never waits for the GPU to learn a length
        tokens, eot_pos = _to_device(tokens[:, :length], clip.positional_embedding.device), \
            _to_device(eot_pos, clip.positional_embedding.device)
        x = clip.token_embedding(tokens) + clip.positional_embedding[:length]
        mask = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None
        x = clip.transformer(x, attn_mask=mask)
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_pos]
        proj = clip.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    def encode_prompts(self, prompts: list[str], cut_padding: bool = True) -> torch.Tensor:
        """Normalized features [len(prompts), K, D] of each prompt's K level texts, computed
        in groups of similar length when `group_texts` (and `cut_padding`) is on."""
        device = self.clip.positional_embedding.device
        k = len(self.levels)
        tokens = self.tokenize(prompts)
        groups = [list(range(len(prompts)))]
        if cut_padding and self.group_texts and len(prompts) > 1:
            lengths = (tokens.argmax(dim=-1).view(len(prompts), k).amax(dim=-1) + 1).tolist()
            groups = length_groups(lengths, k, self.group_overhead)
        tokens = tokens.view(len(prompts), k, -1)  # on the CPU: encode_tokens moves each group
        if len(groups) == 1:
            feats = self.encode_tokens(tokens.flatten(0, 1), cut_padding)
            return F.normalize(feats.float(), dim=-1).view(len(prompts), k, -1)
        parts = [self.encode_tokens(tokens[group].flatten(0, 1), cut_padding) for group in groups]
        feats = F.normalize(torch.cat(parts).float(), dim=-1).view(len(prompts), k, -1)
        order = torch.tensor([i for group in groups for i in group])
        return feats[_to_device(torch.argsort(order), device)]

    def text_features(self, prompts: list[str], cut_padding: bool = True) -> torch.Tensor:
        """Normalized features [B, K, D] of each prompt's K level texts."""
        if torch.is_grad_enabled():
            return self.encode_prompts(prompts, cut_padding)
        device_type = self.clip.positional_embedding.device.type
        low = self.text_autocast and torch.is_autocast_enabled(device_type)
        # a cache entry belongs to the precision that computed it: fp32 features stay fp32
        keys = [(torch.get_autocast_dtype(device_type), p) for p in prompts] if low else list(prompts)
        with torch.autocast(device_type, enabled=False) if not self.text_autocast else contextlib.nullcontext():
            if not (self.cache_texts and not self.training):
                return self.encode_prompts(prompts, cut_padding)
            missing = list(dict.fromkeys((k, p) for k, p in zip(keys, prompts) if k not in self.text_cache))
            if missing:
                for (key, _), feat in zip(missing, self.encode_prompts([p for _, p in missing], cut_padding)):
                    self.text_cache[key] = feat
        return torch.stack([self.text_cache[k] for k in keys])

    def train(self, mode: bool = True):
        self.text_cache.clear()
        return super().train(mode)

    # -- images --------------------------------------------------------------------------
    def image_features(self, crops: torch.Tensor, global_view: torch.Tensor) -> torch.Tensor:
        """Normalized features [B, P+1, D]: the P crops then the global view, encoded together
        (in calls of at most `image_chunk` views when no gradients are needed)."""
        batch, patches = crops.shape[:2]
        views = torch.cat([crops, global_view[:, None].to(crops.dtype)], dim=1).flatten(0, 1)
        return self.encode_views(views).view(batch, patches + 1, -1)

    def encode_views(self, views: torch.Tensor) -> torch.Tensor:
        """Normalized features [N, D] of views [N, 3, 224, 224]."""
        # views cast to the image tower's dtype, so a tower cast to bfloat16 still takes fp32 views
        views = views.to(self.clip.visual.conv1.weight.dtype)
        if self.channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        chunk = self.image_chunk
        # CPU only: on CUDA one call is faster (chunks launch several times the kernels; measured in
        # benchmarks/results/cuda-h200-ViT-B-32.json)
        if chunk and views.device.type == "cpu" and views.shape[0] > chunk and not torch.is_grad_enabled():
            feats = torch.cat([self.clip.encode_image(part) for part in views.split(chunk)])
        else:
            feats = self.clip.encode_image(views)
        return F.normalize(feats.float(), dim=-1)

    # -- scores --------------------------------------------------------------------------
    def level_probs(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """q = (softmax(mean crop logits) + softmax(global logits)) / 2, shape [B, K].

        In fp32 even under autocast: the features are fp32 already, and a bf16 einsum (cosines
        to ~3 digits, times a logit scale of 100) moves bf16 scores by ~0.008 on 0..5, four times
        the error of bf16 image features. The cost is negligible (B x (P+1) x K dot products)."""
        with torch.autocast(image_feats.device.type, enabled=False):
            return probs_from_logits(self.similarities(image_feats, text_feats))

    def similarities(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """Logits [B, V, K] = exp(logit_scale) * cos(view, level text), in fp32 (see `level_probs`)."""
        with torch.autocast(image_feats.device.type, enabled=False):
            return self.clip.logit_scale.exp().float() * torch.einsum("bvd,bkd->bvk", image_feats.float(),
                                                                        text_feats.float())

    @property
    def needs_prompt(self) -> bool:
        """False for a prompt-free model: its template has no `{prompt}` (e.g. "a photo of {level} quality")."""
        return "{prompt}" in self.template

    def forward(self, crops: torch.Tensor, global_view: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Scores [B] on 0..5 for crops [B, P, 3, 224, 224], global views [B, 3, 224, 224]."""
        return score_from_probs(self.probs(crops, global_view, prompts))

    def probs(self, crops: torch.Tensor, global_view: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """The level probabilities q [B, K] whose expected level is the score (`forward`)."""
        if self.overlap_text and not torch.is_grad_enabled():
            texts = self._text_features_in_background(prompts)
            image_feats = self.image_features(crops, global_view)
            text_feats = texts.result()
        else:
            image_feats, text_feats = self.image_features(crops, global_view), self.text_features(prompts)
        return self.level_probs(image_feats, text_feats)

    def _text_features_in_background(self, prompts: list[str]) -> Future:
        """`text_features(prompts)` on the text thread, under this thread's autocast state
        (autocast and grad mode are per thread)."""
        device_type = self.clip.positional_embedding.device.type
        amp, dtype = torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
        threads = torch.get_num_threads()

        def texts() -> torch.Tensor:
            # OpenMP's thread count is per thread: without this the text tower keeps the count the
            # process started with, and its reductions round differently from the caller's.
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            with torch.no_grad(), torch.autocast(device_type, dtype=dtype, enabled=amp):
                return self.text_features(prompts)
        return _text_thread().submit(texts)
