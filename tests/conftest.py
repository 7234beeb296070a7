"""Shared fixtures and helpers: tiny CLIP models and their checkpoints built in the test, generated
images. No network. Dataset layouts on disk are in tests/datagen.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ipce.models.backbone import infer_config, load_backbone
from ipce.models.checkpoint import save_checkpoint
from ipce.models.correspondence import CorrespondenceScorer


def make_tiny_scorer(seed: int = 0) -> CorrespondenceScorer:
    torch.manual_seed(seed)
    clip, _, _ = load_backbone("tiny")
    return CorrespondenceScorer(clip).eval()


def tiny_checkpoint(path, seed: int) -> Path:
    """An ipce checkpoint (.safetensors) of a tiny random CLIP (distinct weights per seed)."""
    model = make_tiny_scorer(seed=seed)
    return save_checkpoint(path, model, {"backbone": "tiny", "model_config": infer_config(model.clip.state_dict())})


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random RGB image (so resizing is meaningful), deterministic per seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BILINEAR)


@pytest.fixture
def tiny_scorer() -> CorrespondenceScorer:
    return make_tiny_scorer()
