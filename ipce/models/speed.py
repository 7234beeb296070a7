"""Optional speed settings: torch.compile of the two encoders (whole towers or per residual
block), attention through SDPA, bf16 image-tower weights for scoring, and CUDA transfer/layout
helpers.

None of them changes a score beyond float rounding, except the bf16 weights (a stated MAD from
fp32; tests/test_performance_options.py, tests/test_attention.py check that);
benchmarks/run.py measures what each one buys (benchmarks/README.md).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ipce.errors import IpceError
from ipce.models.attention import ATTENTIONS, use_sdpa
from ipce.models.correspondence import CorrespondenceScorer


def compile_towers(model: CorrespondenceScorer, mode: str | None = None, dynamic: bool | None = None,
                   backend: str = "inductor") -> CorrespondenceScorer:
    """Compile the image encoder and the text transformer in place (`nn.Module.compile`).

    Parameter names, `state_dict` and checkpoints are unchanged, so the model trains, saves
    and wraps in DDP as before. The first call of each new input shape compiles (tens of
    seconds on a CPU); text groups change length from batch to batch, after the first
    recompilation torch marks that dimension dynamic. Needs a C++ compiler on the CPU.
    """
    clip = model.clip
    clip.visual.compile(backend=backend, mode=mode, dynamic=dynamic)
    clip.transformer.compile(backend=backend, mode=mode, dynamic=dynamic)
    return model


def residual_blocks(model: CorrespondenceScorer) -> list[torch.nn.Module]:
    """The transformer blocks of both towers (a ResNet image tower has none: its text tower's only)."""
    clip = model.clip
    towers = [getattr(clip.visual, "transformer", None), clip.transformer]
    return [block for tower in towers if tower is not None for block in tower.resblocks]


def compile_blocks(model: CorrespondenceScorer, mode: str | None = None, dynamic: bool | None = None,
                   backend: str = "inductor") -> CorrespondenceScorer:
    """Regional compilation: `torch.compile` of each residual block of both towers, in place.

    Every block of a tower has the same code and shapes, so the first block's compiled graph is
    reused by the others: the warm-up is one block's, not a tower's. Between blocks runs eager
    code (embeddings, pooling, the projection). Parameter names and `state_dict` unchanged."""
    for block in residual_blocks(model):
        block.compile(backend=backend, mode=mode, dynamic=dynamic)
    return model


def use_bf16_image_weights(model: CorrespondenceScorer) -> CorrespondenceScorer:
    """Scoring with the image tower's weights in bf16 (views cast to bf16 on the way in) and the
    text tower in fp32 whatever the autocast (`text_autocast` False), its features cached as
    always: no cast of the weights on every forward. For inference only: training keeps fp32
    master weights. Its mean absolute difference from fp32 scores is measured, not zero
    (README, tests/test_performance_options.py)."""
    model.clip.visual.to(torch.bfloat16)
    model.text_autocast = False
    model.text_cache.clear()
    return model


NARROW_BATCH_NORM = 8  # channels up to which a batch norm runs channels-first on the CPU


class _Layout(torch.autograd.Function):
    """A change of memory format whose gradient goes back in the input's format (a plain
    `.contiguous()` passes the gradient through in the output's)."""

    @staticmethod
    def forward(ctx, x, layout, back):
        ctx.back = back
        return x.contiguous(memory_format=layout)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=ctx.back), None, None


def _to_channels_first(module, args):
    x = args[0]
    if x.device.type != "cpu":
        return None
    return (_Layout.apply(x, torch.contiguous_format, torch.channels_last),) + args[1:]


def _to_channels_last(module, args, output):
    if output.device.type != "cpu":
        return None
    return _Layout.apply(output, torch.channels_last, torch.contiguous_format)


def use_channels_last(model: CorrespondenceScorer, narrow_batch_norm: int = NARROW_BATCH_NORM) -> CorrespondenceScorer:
    """Channels-last layout for the image tower's convolutions (a ViT has one, the patch
    embedding; a ResNet tower has them all): their weights are stored channels-last and
    `image_features` hands the views over channels-last. On CUDA cuDNN picks faster kernels;
    on the CPU it buys nothing measurable for a ViT, but ~30 % of the demo's tiny ResNet
    tower's forward + backward (oneDNN's narrow convolutions are faster channels-last).
    The CPU's channels-last batch norm is 2-3x slower than channels-first below ~16 channels,
    so the narrow ones (the demo's stem and first block) take their input channels-first and
    hand it back channels-last: another ~20 % of the tiny tower's forward + backward
    (`narrow_batch_norm`: the most channels of a batch norm run so; 0: none)."""
    visual = model.clip.visual
    visual.to(memory_format=torch.channels_last)  # 4-D weights only
    if not model.channels_last:  # hooks once
        for module in visual.modules():
            if isinstance(module, torch.nn.BatchNorm2d) and module.num_features <= narrow_batch_norm:
                module.register_forward_pre_hook(_to_channels_first)
                module.register_forward_hook(_to_channels_last)
    model.channels_last = True
    return model


def apply_speed_options(model: CorrespondenceScorer, compile: bool = False, channels_last: bool = False,
                        attention: str = "mha", compile_regional: bool = False,
                        bf16_weights: bool = False) -> CorrespondenceScorer:
    """The speed flags of `ipce train`, `predict` and `score` (`--compile`, `--channels-last`,
    `--attention`, `--compile-regional`; scoring also `--bf16-weights`), in place. The attention
    module and the layout first, so that compiled code is traced with the final ones."""
    if attention not in ATTENTIONS:
        raise IpceError(f"--attention {attention}: use {' or '.join(ATTENTIONS)}")
    if compile and compile_regional:
        raise IpceError("--compile and --compile-regional: give one (whole towers or each residual block)")
    if attention == "sdpa":
        use_sdpa(model.clip)
    if bf16_weights:
        use_bf16_image_weights(model)
    if channels_last:
        use_channels_last(model)
    if compile:
        compile_towers(model)
    if compile_regional:
        compile_blocks(model)
    return model


def speed_settings(config) -> dict:
    """The `apply_speed_options` keywords of a TrainConfig."""
    return {"compile": config.compile, "channels_last": config.channels_last, "attention": config.attention,
            "compile_regional": config.compile_regional}


def cuda_settings(tf32: bool = False) -> None:
    """cuDNN autotuning for the fixed-size patch embedding; TF32 matmuls only when asked
    (TF32 is not fp32: about 1e-3 relative error in features)."""
    torch.backends.cudnn.benchmark = True
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def stack_pinned(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """torch.stack into page-locked memory (one copy, as a plain stack), so that a following
    `.to("cuda", non_blocking=True)` is a real asynchronous copy. Use only when a CUDA device
    will receive the batch; without CUDA it falls back to a plain stack."""
    if not torch.cuda.is_available():
        return torch.stack(list(tensors))
    first = tensors[0]
    out = torch.empty((len(tensors), *first.shape), dtype=first.dtype, pin_memory=True)
    return torch.stack(list(tensors), out=out)


def to_device(tensor: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """Copy to `device`, asynchronously when the source is pinned (a no-op on the same device)."""
    device = torch.device(device)
    return tensor.to(device, non_blocking=device.type == "cuda" and tensor.is_pinned())
