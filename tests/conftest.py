"""Shared fixtures: tiny CLIP models built in the test, generated images. No network."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ipce.models.backbone import load_backbone
from ipce.models.correspondence import CorrespondenceScorer


def make_tiny_scorer(seed: int = 0) -> CorrespondenceScorer:
    torch.manual_seed(seed)
    clip, _, _ = load_backbone("tiny")
    return CorrespondenceScorer(clip).eval()


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random RGB image (so resizing is meaningful), deterministic per seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BILINEAR)


@pytest.fixture
def tiny_scorer() -> CorrespondenceScorer:
    return make_tiny_scorer()
