"""Image views of DESIGN.md section 1: adaptive resize, 224x224 crops, the global view.

Only the chosen crops are materialized: a position list is drawn first and each crop is a
slice of the one normalized tensor, so a 768x1024 image costs 15 crops, not every window.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ipce.errors import IpceError, ParameterError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CROP = 224
VIEW_MODES = ("ipce", "clip")


@dataclass(frozen=True)
class ViewConfig:
    resize: int = 512  # adaptive-resize size S
    patches: int = 15  # number of crops P
    train: bool = False  # random positions (with replacement) instead of evenly strided ones
    flip: bool = False  # random horizontal flip (training only)
    mode: str = "ipce"  # "clip": CLIP's own input instead (shorter side to 224, bicubic, centre crop; no crops)

    def __post_init__(self):
        if self.mode not in VIEW_MODES:
            raise IpceError(f"view mode {self.mode!r}: choose one of {', '.join(VIEW_MODES)}")
        # Checked here so that every caller (score, predict, train, the Python API) gets one line.
        if self.resize < CROP:
            raise ParameterError("{resize:=}{value}: must be at least {crop} (the crop size)", value=self.resize, crop=CROP)
        if self.patches < 1:
            raise ParameterError("{patches:=}{value}: must be at least 1", value=self.patches)


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after the adaptive resize: shorter side to `size` when either side is below it."""
    if width >= size and height >= size:
        return width, height
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def adaptive_resize(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size` when either side is below it (aspect kept, bilinear); else unchanged."""
    new = resized_size(*image.size, size)
    return image if new == image.size else image.resize(new, Image.BILINEAR)


# (x / 255 - mean) / std as one multiply-add: x * SCALE + SHIFT.
_SCALE = (1.0 / (255.0 * torch.tensor(CLIP_STD))).view(3, 1, 1)
_SHIFT = (-torch.tensor(CLIP_MEAN) / torch.tensor(CLIP_STD)).view(3, 1, 1)


def to_normalized_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> contiguous float tensor [3, H, W], normalized with CLIP's mean and std.

    Reads the 8-bit pixels once into channel-first float32 and normalizes in place with one
    multiply-add (equal to (x/255 - mean)/std within float rounding, ~5e-7)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))  # [H, W, 3]
    return normalize_pixels(pixels.permute(2, 0, 1))


def normalize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """8-bit channel-first pixels [..., 3, H, W] -> a new contiguous float32 tensor normalized
    with CLIP's mean and std (one multiply-add), on the pixels' device."""
    tensor = pixels.to(torch.float32, memory_format=torch.contiguous_format)
    if tensor.device.type == "cpu":
        return tensor.mul_(_SCALE).add_(_SHIFT)
    return tensor.mul_(_SCALE.to(tensor.device)).add_(_SHIFT.to(tensor.device))


def crop_grid(height: int, width: int) -> tuple[int, int, int]:
    """(rows, cols, stride) of the 224x224 window grid of an image of this size."""
    if height < CROP or width < CROP:
        raise ValueError(f"image of {width}x{height} px is smaller than the {CROP} px crop")
    stride = 48 if height >= 1024 or width >= 1024 else 32
    return (height - CROP) // stride + 1, (width - CROP) // stride + 1, stride


def grid_positions(height: int, width: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Top-left corners (top, left) of every 224x224 window at `stride` (default: the method's own,
    `crop_grid`), row-major. Where the stride does not reach the last row or column a window flush
    with that edge is added, so the windows always cover the image (the method's own windows,
    `crop_positions`, are among them at its stride)."""
    own = crop_grid(height, width)[2]  # also the size check
    stride = own if stride is None else stride
    if stride < 1:
        raise ParameterError("{stride:=}{value}: must be at least 1", value=stride)

    def starts(extent: int) -> list[int]:
        found = list(range(0, extent - CROP + 1, stride))
        return found if found[-1] == extent - CROP else found + [extent - CROP]
    return [(top, left) for top in starts(height) for left in starts(width)]


def crop_positions(height: int, width: int, patches: int, train: bool,
                   generator: torch.Generator | None = None) -> list[tuple[int, int]]:
    """Top-left corners of the selected windows, positions numbered row-major."""
    rows, cols, stride = crop_grid(height, width)
    total = rows * cols
    if train:
        indices = torch.randint(total, (patches,), generator=generator).tolist()
    else:
        step = total // patches
        indices = [step * i for i in range(patches)]
    return [((k // cols) * stride, (k % cols) * stride) for k in indices]


def global_view(tensor: torch.Tensor) -> torch.Tensor:
    """The whole normalized image resized to 224x224 (bilinear, align_corners=False)."""
    return F.interpolate(tensor[None], size=(CROP, CROP), mode="bilinear", align_corners=False)[0]


def clip_input_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) with the shorter side 224, the longer int(224 * long / short) (torchvision's and
    Hugging Face's rounding down)."""
    if width <= height:
        return CROP, int(CROP * height / width)
    return int(CROP * width / height), CROP


def clip_input(image: Image.Image) -> torch.Tensor:
    """CLIP's own input (open_clip's and Hugging Face's preprocessing, what CLIPScore sees): the shorter
    side resized to 224 (bicubic), the centre 224x224, normalized; [3, 224, 224]."""
    size = clip_input_size(*image.size)
    image = image.resize(size, Image.BICUBIC) if size != image.size else image
    left, top = (size[0] - CROP) // 2, (size[1] - CROP) // 2
    return to_normalized_tensor(image.crop((left, top, left + CROP, top + CROP)))


def make_views(image: Image.Image, config: ViewConfig,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(crops [P, 3, 224, 224], global view [3, 224, 224]) of one RGB image; mode "clip": no crops
    ([0, 3, 224, 224]) and CLIP's own input as the global view."""
    if config.mode == "clip":
        return torch.empty(0, 3, CROP, CROP), clip_input(image)
    return views_from_pixels(*make_pixels(image, config, generator))


def make_pixels(image: Image.Image, config: ViewConfig,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The part of `make_views` that needs the picture: (the resized, possibly flipped image as 8-bit
    pixels [H, W, 3], contiguous; the crops' top-left corners), drawing from `generator` what
    `make_views` draws. `views_from_pixels` makes the views of them on any device (`--feed uint8`:
    for a 512x512 image and 15 crops + the global view, a twelfth of the float views' bytes travel
    to the GPU). Not for mode "clip"."""
    image = adaptive_resize(image, config.resize)
    if config.flip and torch.rand((), generator=generator).item() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    if image.mode != "RGB":
        image = image.convert("RGB")
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))  # [H, W, 3]
    height, width = pixels.shape[:2]
    return pixels, crop_positions(height, width, config.patches, config.train, generator)


def views_from_pixels(pixels: torch.Tensor, positions: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(crops [P, 3, 224, 224], global view [3, 224, 224]) of 8-bit pixels [H, W, 3] on their device:
    normalized, cut at `positions`, the whole resized to 224x224, as `make_views` makes them."""
    tensor = normalize_pixels(pixels.permute(2, 0, 1))
    crops = torch.stack([tensor[:, top:top + CROP, left:left + CROP] for top, left in positions])
    return crops, global_view(tensor)


# ----------------------------------------------------------------------------- tensor views
# The evaluation views as tensor ops, differentiable to the pixels (the reward). Pillow's
# bilinear resize is a triangle filter that widens its support when it shrinks an image;
# F.interpolate(antialias=True) is the same filter, so the two differ only in Pillow's
# 8-bit rounding of the resized image.

def resize_pixels(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """The adaptive resize of a batch [B, 3, H, W] (bilinear, antialiased; unchanged when both
    sides are at least `size`)."""
    height, width = pixels.shape[-2:]
    new_width, new_height = resized_size(width, height, size)
    if (new_width, new_height) == (width, height):
        return pixels
    return F.interpolate(pixels, size=(new_height, new_width), mode="bilinear", align_corners=False, antialias=True)


def tensor_views(pixels: torch.Tensor, config: ViewConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(crops [B, P, 3, 224, 224], global views [B, 3, 224, 224]) of float pixels [B, 3, H, W] in
    0..1, as `make_views` makes them in evaluation (no flip, evenly strided crops), with gradients."""
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise IpceError(f"pixels of shape {tuple(pixels.shape)}: expected [B, 3, H, W]")
    mean = torch.tensor(CLIP_MEAN, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    if config.mode == "clip":  # clip_input as tensor ops: bicubic (antialiased) shorter side to 224, centre crop
        size = clip_input_size(*pixels.shape[-2:][::-1])[::-1]
        resized = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False, antialias=True)
        top, left = (size[0] - CROP) // 2, (size[1] - CROP) // 2
        tensor = (resized[..., top:top + CROP, left:left + CROP] - mean) / std
        return tensor.new_empty(tensor.shape[0], 0, 3, CROP, CROP), tensor
    resized = resize_pixels(pixels, config.resize)
    tensor = (resized - mean) / std
    height, width = tensor.shape[-2:]
    positions = crop_positions(height, width, config.patches, train=False)
    crops = torch.stack([tensor[:, :, top:top + CROP, left:left + CROP] for top, left in positions], dim=1)
    return crops, F.interpolate(tensor, size=(CROP, CROP), mode="bilinear", align_corners=False)
