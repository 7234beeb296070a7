"""The demo's pretraining stand-in: its batches, its losses, and the weight file it leaves."""
from __future__ import annotations

import numpy as np
import torch

from ipce.engine.pretrain import PretrainConfig, draw_batch, pretrain, pretrain_loss, render_pool
from ipce.models.backbone import load_backbone
from ipce.models.correspondence import CorrespondenceScorer
from ipce.utils.checkpoint import save_checkpoint
from tests.conftest import make_tiny_scorer


def test_batches_pair_every_picture_with_an_altered_prompt():
    pool, attrs = render_pool(12, 224, np.random.default_rng(0))
    assert pool.shape == (12, 3, 224, 224) and pool.dtype == torch.uint8
    again, attrs2 = render_pool(12, 224, np.random.default_rng(0))
    assert torch.equal(pool, again) and attrs == attrs2
    pictures, prompts, altered = draw_batch(pool, attrs, 8, np.random.default_rng(1))
    assert pictures.shape == (8, 3, 224, 224) and pictures.dtype == torch.float32
    assert all(a != p for a, p in zip(altered, prompts))
    # one attribute differs: the prompts share all but at most two words (count + plural)
    for a, p in zip(altered, prompts):
        assert sum(x != y for x, y in zip(a.split(), p.split())) <= 2
    # the picture of each prompt is in the pool: its pixels, normalized as the views are
    from ipce.datasets.synthetic import prompt_text
    from ipce.datasets.views import CLIP_MEAN, CLIP_STD

    index = [prompt_text(a) for a in attrs].index(prompts[0])
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    assert torch.allclose(pictures[0], (pool[index].float() / 255 - mean) / std, atol=1e-6)


def test_swap_loss_labels_own_prompt_perfectly_and_altered_badly():
    model = make_tiny_scorer().train()
    pool, attrs = render_pool(4, 224, np.random.default_rng(1))
    pictures, prompts, altered = draw_batch(pool, attrs, 4, np.random.default_rng(2))
    _, parts = pretrain_loss(model, pictures, prompts, altered)
    # hand-computed: own prompts (first half) -> last level, altered (second half) -> first level
    with torch.no_grad():
        image = torch.nn.functional.normalize(model.clip.encode_image(pictures), dim=-1)
        texts = model.text_features(prompts[:2] + altered[2:])
        logits = model.clip.logit_scale.exp() * torch.einsum("bd,bkd->bk", image, texts)
        expected = torch.nn.functional.cross_entropy(logits, torch.tensor([4, 4, 0, 0]))
    assert abs(parts["swap"] - expected.item()) < 1e-5


def test_pretraining_lowers_both_losses():
    model = make_tiny_scorer()
    history = pretrain(model, PretrainConfig(steps=100, batch=16, pool=64, seed=0), log=lambda _: None)
    first, last = history[0], history[-1]
    assert last["contrastive"] < first["contrastive"] - 0.3
    assert last["swap"] < first["swap"]


def test_tiny_backbone_loads_pretrained_weights(tmp_path):
    model = make_tiny_scorer(seed=3)
    _, config, _ = load_backbone("tiny")
    path = save_checkpoint(tmp_path / "tiny.safetensors", model, {"model_config": config})
    clip, _, description = load_backbone("tiny", weights=path)
    assert str(path) in description
    for key, value in model.clip.state_dict().items():
        assert torch.equal(clip.state_dict()[key], value), key
    fresh = CorrespondenceScorer(load_backbone("tiny")[0])
    assert not torch.equal(fresh.clip.visual.conv1.weight, model.clip.visual.conv1.weight)
