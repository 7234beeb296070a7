"""The demo's pretraining stand-in: its batches, its losses, and the weight file it leaves."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ipce.demo.synthetic import prompt_text
from ipce.demo.pretrain import (LOOK_WORDS, PretrainConfig, caption, draw_batch, draw_pictures, look_index,
                                  look_texts, plain_attention, pretrain, pretrain_loss, pretrain_lr, render_pool,
                                  squeeze)
from ipce.models.backbone import load_backbone
from ipce.models.checkpoint import save_checkpoint
from ipce.models.correspondence import CorrespondenceScorer
from tests.conftest import make_tiny_scorer


def test_batches_pair_every_picture_with_an_altered_prompt():
    pool, attrs = render_pool(40, 224, np.random.default_rng(0))
    assert pool.shape == (40, 3, 224, 224) and pool.dtype == torch.uint8
    again, attrs2 = render_pool(40, 224, np.random.default_rng(0))
    assert torch.equal(pool, again) and attrs == attrs2
    batch = draw_batch(pool, attrs, 8, np.random.default_rng(1), group=1)
    assert batch.pictures.shape == (8, 3, 224, 224) and batch.pictures.dtype == torch.float32
    assert all(a != p for a, p in zip(batch.altered, batch.prompts))
    # one attribute differs: the prompts share all but at most two words (count + plural)
    for a, p in zip(batch.altered, batch.prompts):
        assert sum(x != y for x, y in zip(a.split(), p.split())) <= 2
    # the picture of each prompt is in the pool: its pixels, normalized as the views are
    from ipce.models.views import CLIP_MEAN, CLIP_STD

    index = [caption(a) for a in attrs].index(batch.captions[0])
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    assert torch.allclose(batch.pictures[0], (pool[index].float() / 255 - mean) / std, atol=1e-6)


def test_captions_say_how_degraded_pictures_look():
    _, attrs = render_pool(40, 224, np.random.default_rng(0), degrade_rate=0.5)
    clean = [a for a in attrs if a["look"] is None]
    degraded = [a for a in attrs if a["look"] is not None]
    assert clean and degraded
    for a in clean:
        assert caption(a) == prompt_text(a) and look_index(a["look"]) == 0
    for a in degraded:
        kind, severity = a["look"]
        text = look_texts()[look_index(a["look"])]
        assert LOOK_WORDS[kind] in text and ("very" in text) == (severity >= 0.5)
        assert caption(a) == f"{text} of {prompt_text(a)}"
        assert caption(a, quality=False) == prompt_text(a)
    assert len(set(look_texts())) == len(look_texts()) == 1 + 2 * len(LOOK_WORDS)


def test_pool_pictures_are_squeezed_as_the_global_view_is():
    from ipce.models.views import global_view, normalize_pixels, to_normalized_tensor
    from tests.conftest import random_image

    picture = random_image(413, 287, seed=4)
    expected = global_view(to_normalized_tensor(picture))
    got = normalize_pixels(squeeze(picture, 224))
    assert got.shape == expected.shape
    # equal up to rounding the resized pixels to 8 bits (half a grey level over CLIP's std)
    assert (got - expected).abs().max() < 0.51 / 255 / 0.26


def test_groups_share_colour_and_background():
    _, attrs = render_pool(400, 224, np.random.default_rng(0))
    chosen = draw_pictures(attrs, 16, np.random.default_rng(3), group=4)
    assert len(set(chosen.tolist())) == 16
    for run in chosen.reshape(4, 4):
        assert len({(attrs[i]["colour"], attrs[i]["background"]) for i in run}) == 1
    # independent draws: not all runs alike
    free = draw_pictures(attrs, 16, np.random.default_rng(3), group=1).reshape(4, 4)
    assert any(len({(attrs[i]["colour"], attrs[i]["background"]) for i in run}) > 1 for run in free)


def _hand_losses(model, batch):
    """The swap and look losses computed directly from their definitions."""
    with torch.no_grad():
        image = torch.nn.functional.normalize(model.clip.encode_image(batch.pictures), dim=-1)
        scale = model.clip.logit_scale.exp()
        half = len(batch.prompts) // 2
        texts = model.text_features(batch.prompts[:half] + batch.altered[half:])
        logits = scale * torch.einsum("bd,bkd->bk", image, texts)
        terms = [torch.nn.functional.cross_entropy(logits[i], torch.tensor(4 if i < half else 0))
                 for i in range(len(batch.prompts)) if not (i < half and batch.looks[i] > 0)]
        looks = torch.nn.functional.normalize(model.encode_tokens(model.tokenizer(look_texts())), dim=-1)
        look = torch.nn.functional.cross_entropy(scale * image @ looks.T, batch.looks)
    return torch.stack(terms).mean().item(), look.item()


def test_swap_loss_labels_clean_own_prompts_perfectly_and_altered_badly():
    model = make_tiny_scorer().train()
    pool, attrs = render_pool(40, 224, np.random.default_rng(1), degrade_rate=0.5)
    batch = draw_batch(pool, attrs, 12, np.random.default_rng(2))
    # the first half has a degraded picture (left out of the swap loss) and a clean one
    assert (batch.looks[:6] > 0).any() and (batch.looks[:6] == 0).any()
    _, parts = pretrain_loss(model, batch)
    swap, look = _hand_losses(model, batch)
    assert abs(parts["swap"] - swap) < 1e-5 and abs(parts["look"] - look) < 1e-5


@pytest.mark.slow
def test_pretraining_lowers_its_losses():
    model = make_tiny_scorer()
    history = pretrain(model, PretrainConfig(steps=100, batch=16, pool=64, seed=0))
    first, last = history[0], history[-1]
    assert last["contrastive"] < first["contrastive"] - 0.3
    assert last["swap"] < first["swap"]
    assert last["look"] < first["look"]


def test_pretraining_channels_last_follows_the_same_path():
    """Channels-last (the demo's ResNet tower runs ~30 % faster) changes the layout, not the
    arithmetic: the first step's losses equal the plain run's to rounding, the pictures reach
    the tower channels-last, and the model stays channels-last."""
    config = PretrainConfig(steps=1, batch=8, pool=16, seed=0)
    runs, layouts = [], []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = CorrespondenceScorer(load_backbone("tiny-resnet")[0])
        model.clip.visual.register_forward_pre_hook(
            lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
        runs.append(pretrain(model, config, channels_last=channels_last)[0])
    assert layouts == [False, True]
    assert model.channels_last and model.clip.visual.layer1[0].conv2.weight.is_contiguous(memory_format=torch.channels_last)
    for key in ("contrastive", "swap", "look"):
        assert abs(runs[0][key] - runs[1][key]) < 1e-3, key  # fp32 rounding at logit scale 14


def test_pretraining_progress_bar_leaves_the_weights_bit_identical(capsys):
    """The bar (rate, ETA) only watches: with it on or off the same steps give the same bits."""
    config = PretrainConfig(steps=2, batch=8, pool=16, seed=0)
    weights, bars = [], []
    for progress in (False, True):
        model = make_tiny_scorer(seed=0)
        pretrain(model, config, progress=progress)
        weights.append(model.state_dict())
        bars.append(capsys.readouterr().err)
    assert "pretraining" not in bars[0] and "2/2" in bars[1] and ("step/s" in bars[1] or "s/step" in bars[1])
    assert weights[0].keys() == weights[1].keys()
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


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


def test_pretraining_rate_warms_up_then_decays_to_zero():
    config = PretrainConfig(steps=100, lr=1e-3, warmup=10, decay=True)
    rates = [pretrain_lr(config, step) for step in range(1, 101)]
    assert abs(rates[0] - 1e-4) < 1e-12 and rates[9] == 1e-3  # linear warm-up over 10 steps
    assert all(a > b for a, b in zip(rates[9:], rates[10:]))  # then falls at every step
    assert abs(pretrain_lr(config, 55) - 5e-4) < 1e-12 and rates[-1] == 0.0  # half way, then zero
    flat = PretrainConfig(steps=100, lr=1e-3, warmup=0, decay=False)
    assert {pretrain_lr(flat, step) for step in range(1, 101)} == {1e-3}


def test_plain_attention_turns_off_the_fused_kernels_on_the_cpu_only():
    """The pretraining's CPU speed-up: attention as plain matmuls, the same numbers."""
    assert torch.backends.cuda.flash_sdp_enabled()
    q, k, v = torch.randn(3, 4, 2, 20, 64).unbind(0)
    mask = torch.full((20, 20), float("-inf")).triu(1)
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with plain_attention(torch.device("cpu")):
        assert not torch.backends.cuda.flash_sdp_enabled()
        plain = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.backends.cuda.flash_sdp_enabled()  # restored on leaving
    assert torch.allclose(fused, plain, atol=1e-5)
    with plain_attention(torch.device("cuda")):  # a device object needs no GPU
        assert torch.backends.cuda.flash_sdp_enabled()
