"""The differentiable reward: tensor views that follow make_views, agreement with score() for an
image on disk, gradients to the pixels and the model, gradient ascent, and the RL-library callable."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import ipce
from ipce.models.views import ViewConfig, make_views, tensor_views
from ipce.errors import IpceError
from tests.conftest import random_image, tiny_checkpoint


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    return ipce.load_scorer(tiny_checkpoint(tmp_path_factory.mktemp("reward") / "m.safetensors", seed=5), patches=4)


def pixels_of(path) -> torch.Tensor:
    """The file's 8-bit pixels as float [1, 3, H, W] in 0..1, read with numpy, not ipce."""
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)[None].float() / 255


def pixels_of_image(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


def test_tensor_views_are_make_views_where_no_resize_is_needed():
    image = random_image(600, 530, seed=2)
    config = ViewConfig(resize=512, patches=6)
    crops, global_view = make_views(image, config)
    t_crops, t_global = tensor_views(pixels_of_image(image), config)
    assert t_crops.shape == (1, 6, 3, 224, 224) and t_global.shape == (1, 3, 224, 224)
    assert torch.allclose(t_crops[0], crops, atol=1e-5) and torch.allclose(t_global[0], global_view, atol=1e-5)


def test_tensor_resize_is_pillows_but_for_its_rounding():
    image = random_image(300, 200, seed=4)  # shorter side 200 < 512: resized to 768x512
    config = ViewConfig(resize=512, patches=3)
    crops, _ = make_views(image, config)
    t_crops, _ = tensor_views(pixels_of_image(image), config)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(3, 1, 1)
    # on the 0..255 scale: within Pillow's 8-bit rounding of the resized image, plus at most a level of filter
    assert ((t_crops[0] - crops) * std * 255).abs().max() < 2.0


@pytest.mark.parametrize("size", [(300, 200), (560, 600)])
def test_reward_agrees_with_score_for_an_image_on_disk(scorer, tmp_path, size):
    path = tmp_path / "gen_0.png"
    random_image(*size, seed=size[0]).save(path)
    expected = scorer.score(path, "a red square")[0]
    reward = scorer.reward(pixels_of(path), "a red square")
    assert reward.shape == (1,)
    assert abs(reward.item() - expected) < 0.02
    if size == (560, 600):  # no resize: the same views, the same score within float rounding
        assert reward.item() == pytest.approx(expected, abs=1e-4)


def test_gradient_reaches_the_pixels_and_the_model(scorer):
    pixels = pixels_of_image(random_image(256, 240, seed=1)).requires_grad_(True)
    model = scorer.members[0].model
    model.zero_grad()
    scorer.reward(pixels, ["a cat"]).sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0 and torch.isfinite(pixels.grad).all()
    image_grads = [p.grad for p in model.clip.visual.parameters() if p.grad is not None]
    text_grads = [p.grad for p in model.clip.transformer.parameters() if p.grad is not None]
    assert image_grads and text_grads and any(g.abs().sum() > 0 for g in image_grads + text_grads)
    model.zero_grad()


def test_twenty_steps_of_gradient_ascent_raise_the_score(scorer, tmp_path):
    start = pixels_of_image(random_image(224, 224, seed=3))
    pixels = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([pixels], lr=0.01)
    before = scorer.reward(start, "a photo").item()
    for _ in range(20):
        optimizer.zero_grad()
        (-scorer.reward(pixels, "a photo")).sum().backward()
        optimizer.step()
        with torch.no_grad():
            pixels.clamp_(0, 1)
    scorer.members[0].model.zero_grad()
    after = scorer.reward(pixels.detach(), "a photo").item()
    # and it holds for the image written to disk and scored as any other
    Image.fromarray((pixels.detach()[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / "a.png")
    on_disk = scorer.score(tmp_path / "a.png", "a photo")[0]
    assert after > before + 0.05 and on_disk > before + 0.05, (before, after, on_disk)


def test_reward_fn_takes_uint8_nhwc_and_float_nchw(scorer):
    images = np.stack([np.array(random_image(240, 230, seed=s)) for s in (7, 8)])  # [2, H, W, 3] uint8
    reward_fn = scorer.reward_fn()
    prompts = ["a dog", "a boat"]
    from_numpy, meta = reward_fn(images, prompts, [{}, {}])
    from_tensor, _ = reward_fn(torch.from_numpy(images), prompts, None)
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    from_float, _ = reward_fn(nchw, prompts, {})
    assert from_numpy.shape == (2,) and meta["per_model"].shape == (1, 2)
    assert torch.allclose(from_numpy, from_float, atol=1e-5) and torch.allclose(from_tensor, from_float, atol=1e-5)
    assert from_float.tolist() == pytest.approx(scorer.reward(nchw, prompts).tolist(), abs=1e-6)
    assert from_float[0].item() != pytest.approx(from_float[1].item(), abs=1e-4)  # two images, two rewards
    assert not from_float.requires_grad  # no graph for images that need no gradient
    through = nchw.clone().requires_grad_(True)
    rewards, _ = reward_fn(through, prompts, None)
    rewards.sum().backward()  # a generator's images: the gradient comes back to them
    assert through.grad.abs().sum() > 0
    scorer.members[0].model.zero_grad()


def test_reward_runs_under_no_grad_too_and_checks_its_input(scorer):
    pixels = pixels_of_image(random_image(224, 224, seed=9))
    with torch.no_grad():
        reward = scorer.reward(pixels, "x")
    assert not reward.requires_grad and reward.item() == pytest.approx(scorer.reward(pixels, "x").item(), abs=1e-5)
    with pytest.raises(IpceError, match="expected"):
        scorer.reward(pixels[0], "x")
    with pytest.raises(IpceError, match="expected"):
        scorer.reward_fn()(np.zeros((1, 5, 8, 8), np.uint8), ["x"], None)
