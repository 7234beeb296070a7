"""The speed options give the scores the plain computation gives (no timing here: the speed
goals live in benchmarks/). Tiny model, CPU."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ipce.datasets.views import CLIP_MEAN, CLIP_STD, ViewConfig, make_views, to_normalized_tensor
from ipce.models.correspondence import QuickGELUMLP, fuse_quick_gelu, length_groups
from ipce.utils import speed
from tests.conftest import make_tiny_scorer, random_image

PROMPTS = ["a cat", "two dogs playing in the snow next to a frozen lake at dawn, oil painting, warm light",
           "x", "statue of a man on a horse in a city square", "a cat",
           "word " * 100]  # a duplicate and one prompt longer than the context


def views_of(count: int, patches: int = 3, size=(256, 256)):
    pairs = [make_views(random_image(*size, seed=i), ViewConfig(resize=256, patches=patches)) for i in range(count)]
    return torch.stack([c for c, _ in pairs]), torch.stack([g for _, g in pairs])


def test_length_groups_cover_every_item_once():
    lengths = [10, 50, 12, 48, 30, 11, 77, 9]
    for overhead in (0, 16, 64, 10_000):
        groups = length_groups(lengths, 5, overhead)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert len(length_groups(lengths, 5, 10_000)) == 1  # calls expensive: one batch
    assert all(len({lengths[i] for i in g}) == 1 for g in length_groups(lengths, 5, 0))  # free: no padding
    assert length_groups([], 5, 64) == []


def test_grouped_text_features_equal_one_padded_batch():
    model = make_tiny_scorer()
    with torch.no_grad():
        model.group_texts = False
        single = model.encode_prompts(PROMPTS)
        model.group_texts = True
        model.group_overhead = 0  # as many groups as lengths
        grouped = model.encode_prompts(PROMPTS)
        uncut = model.encode_prompts(PROMPTS, cut_padding=False)
    assert grouped.shape == (len(PROMPTS), 5, 64)
    assert torch.allclose(grouped, single, atol=1e-5) and torch.allclose(grouped, uncut, atol=1e-5)
    assert torch.allclose(grouped[0], grouped[4], atol=1e-6)  # order kept, duplicates alike


def test_grouped_text_features_carry_gradients():
    model = make_tiny_scorer().train()
    model.group_overhead = 0
    feats = model.text_features(PROMPTS[:4])
    feats.sum().backward()
    assert model.clip.token_embedding.weight.grad.abs().sum() > 0


def test_fused_quick_gelu_equals_open_clip_mlp():
    model = make_tiny_scorer()
    plain = copy.deepcopy(model)
    assert fuse_quick_gelu(plain.clip, enabled=False) == 4  # 2 image + 2 text blocks
    assert isinstance(model.clip.visual.transformer.resblocks[0].mlp, QuickGELUMLP)
    assert list(model.state_dict()) == list(plain.state_dict())  # checkpoints unchanged
    crops, glob = views_of(2)
    prompts = PROMPTS[:2]
    with torch.no_grad():
        assert torch.allclose(model(crops, glob, prompts), plain(crops, glob, prompts), atol=1e-5)
    model.train(), plain.train()
    targets = torch.tensor([1.0, 4.0])
    for m in (model, plain):
        F.l1_loss(m(crops, glob, prompts), targets).backward()
    for (name, a), (_, b) in zip(model.named_parameters(), plain.named_parameters()):
        if a.grad is not None or b.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name


def test_fuse_leaves_other_activations_alone():
    from open_clip.transformer import QuickGELU

    mlp = torch.nn.Sequential()
    mlp.add_module("c_fc", torch.nn.Linear(4, 8))
    mlp.add_module("gelu", torch.nn.GELU())
    mlp.add_module("c_proj", torch.nn.Linear(8, 4))
    assert fuse_quick_gelu(mlp) == 0 and type(mlp) is torch.nn.Sequential
    mlp.gelu = QuickGELU()
    x = torch.randn(3, 5, 4)
    expected = mlp(x)
    assert fuse_quick_gelu(mlp) == 1
    with torch.no_grad():
        assert torch.allclose(mlp(x), expected, atol=1e-6)


def test_image_chunks_equal_one_call():
    model = make_tiny_scorer()
    crops, glob = views_of(3, patches=4)  # 15 views
    with torch.no_grad():
        model.image_chunk = None
        whole = model.image_features(crops, glob)
        model.image_chunk = 4  # uneven last chunk
        chunked = model.image_features(crops, glob)
    assert torch.allclose(whole, chunked, atol=1e-6)


def test_texts_stay_fp32_under_autocast_and_the_cache_ignores_precision():
    model = make_tiny_scorer()
    with torch.no_grad():
        fp32 = model.encode_prompts(PROMPTS[:3])
        model._text_cache.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cached = model.text_features(PROMPTS[:3])
        model.text_autocast = True
        model._text_cache.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.text_features(PROMPTS[:3])
    assert torch.allclose(cached, fp32, atol=1e-6)
    assert not torch.allclose(low, fp32, atol=1e-4)  # bf16 texts really differ


def test_bf16_scores_stay_close_to_fp32():
    model = make_tiny_scorer()
    crops, glob = views_of(4)
    prompts = PROMPTS[:4]
    with torch.no_grad():
        fp32 = model(crops, glob, prompts)
        model._text_cache.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(crops, glob, prompts)
    assert (low.float() - fp32).abs().mean() <= 0.02


def test_normalized_tensor_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    expected = (torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
                - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    for mode in ("RGB", "RGBA", "L"):
        image = Image.fromarray(pixels).convert(mode)
        ours = to_normalized_tensor(image)
        reference = expected if mode != "L" else None
        if reference is None:  # gray: the RGB conversion of the gray image
            rgb = np.asarray(image.convert("RGB"))
            reference = (torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255
                         - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
        assert ours.shape == (3, 37, 53) and ours.dtype == torch.float32 and ours.is_contiguous()
        assert torch.allclose(ours, reference, atol=1e-6)


def test_compiled_towers_give_the_same_scores_and_keys():
    model = make_tiny_scorer()
    crops, glob = views_of(2)
    prompts = PROMPTS[:2]
    with torch.no_grad():
        expected = model(crops, glob, prompts)
    keys = list(model.state_dict())
    torch._dynamo.reset()
    # aot_eager: the same capture as the default inductor backend without C++ code generation
    # (seconds instead of a minute); benchmarks/run.py times the inductor build.
    speed.compile_towers(model, backend="aot_eager")
    model._text_cache.clear()
    with torch.no_grad():
        got = model(crops, glob, prompts)
    assert torch.allclose(got, expected, atol=1e-5)
    assert list(model.state_dict()) == keys
    torch._dynamo.reset()


def test_channels_last_and_transfer_helpers_change_nothing():
    model = make_tiny_scorer()
    crops, glob = views_of(2)
    with torch.no_grad():
        expected = model(crops, glob, PROMPTS[:2])
        speed.use_channels_last(model)
        assert model.clip.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        got = model(speed.to_device(crops, "cpu"), speed.to_device(glob, "cpu"), PROMPTS[:2])
    assert torch.allclose(got, expected, atol=1e-5)
    parts = [torch.randn(3, 4) for _ in range(5)]
    assert torch.equal(speed.stack_pinned(parts), torch.stack(parts))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pinned_stack_on_cuda():
    parts = [torch.randn(3, 4) for _ in range(5)]
    stacked = speed.stack_pinned(parts)
    assert stacked.is_pinned() and torch.equal(stacked, torch.stack(parts))
    assert torch.equal(speed.to_device(stacked, "cuda").cpu(), stacked)
