import pytest
import torch
from PIL import Image

from ipce.models.views import (CROP, ViewConfig, adaptive_resize, crop_grid, crop_positions, make_views,
                                 to_normalized_tensor)
from ipce.errors import IpceError, ParameterError
from ipce.models.reference import all_windows, original_views
from tests.conftest import random_image


def test_adaptive_resize_follows_the_shorter_side():
    assert adaptive_resize(Image.new("RGB", (300, 200)), 512).size == (768, 512)
    assert adaptive_resize(Image.new("RGB", (200, 333)), 512).size == (512, int(512 * 333 / 200))
    assert adaptive_resize(Image.new("RGB", (100, 100)), 512).size == (512, 512)
    big = Image.new("RGB", (800, 600))
    assert adaptive_resize(big, 512) is big  # both sides >= S: untouched


def test_crop_grid_stride_depends_on_size():
    assert crop_grid(512, 512) == ((512 - 224) // 32 + 1, (512 - 224) // 32 + 1, 32)
    assert crop_grid(1024, 600) == ((1024 - 224) // 48 + 1, (600 - 224) // 48 + 1, 48)


def test_eval_positions_are_evenly_strided_row_major():
    rows, cols, stride = crop_grid(512, 768)
    positions = crop_positions(512, 768, 15, train=False)
    step = rows * cols // 15
    expected = [((k // cols) * stride, (k % cols) * stride) for k in (step * i for i in range(15))]
    assert positions == expected


def test_train_positions_are_seeded_and_drawn_with_replacement():
    a = crop_positions(512, 512, 200, True, torch.Generator().manual_seed(1))
    b = crop_positions(512, 512, 200, True, torch.Generator().manual_seed(1))
    c = crop_positions(512, 512, 200, True, torch.Generator().manual_seed(2))
    assert a == b and a != c
    assert len(set(a)) < len(a)  # 200 draws from 100 windows must repeat


def test_views_equal_the_seed_window_copy():
    for size in [(300, 180), (512, 700), (1100, 1040)]:
        image = random_image(*size, seed=size[0])
        crops, global_view = make_views(image, ViewConfig(resize=512, patches=15))
        ref_crops, ref_global_view = original_views(image, 512, 15)
        assert crops.shape == (15, 3, CROP, CROP) and global_view.shape == (3, CROP, CROP)
        assert torch.allclose(crops, ref_crops, atol=1e-6)
        assert torch.allclose(global_view, ref_global_view, atol=1e-6)


def test_only_the_chosen_crops_are_materialized():
    """make_views allocates the normalized image, its 15 crops and the global view, not every window."""
    from torch.profiler import ProfilerActivity, profile

    def allocated(call):  # bytes the torch CPU allocator handed out during `call`
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            call()
        return sum(e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0)

    image = random_image(768, 1024)
    window = 3 * CROP * CROP * 4  # one float32 crop
    rows, cols, _ = crop_grid(1024, 768)  # 17 x 12 windows at stride 48
    needed = 3 * 1024 * 768 * 4 + 15 * window + window  # the image, the 15 crops, the global view
    used = allocated(lambda: make_views(image, ViewConfig(resize=768, patches=15)))
    assert 0 < used <= 1.5 * needed
    assert allocated(lambda: all_windows(to_normalized_tensor(image))) >= rows * cols * window  # the seed's copy
    assert rows * cols * window > 5 * needed


def test_flip_mirrors_the_image():
    """A flipped draw shows the mirrored image: its global view is the plain one with its columns
    reversed, and its crop is a window of the mirrored pixels, not of the image as it is."""
    image = random_image(512, 512, seed=3)
    pixels = to_normalized_tensor(image)
    mirrored = pixels.flip(-1)  # the columns reversed, by hand
    _, plain = make_views(image, ViewConfig(resize=512, patches=1))

    def is_window_of(crop, tensor):  # any 224x224 window on the 32-px grid of a 512x512 image
        windows = tensor.unfold(1, CROP, 32).unfold(2, CROP, 32)  # [3, 10, 10, 224, 224], a view
        return bool(((windows - crop[:, None, None]).abs().amax(dim=(0, 3, 4)) <= 1e-6).any())

    sides = []
    for seed in range(4):  # seeds 0 and 3 flip, 1 and 2 do not
        crops, global_view = make_views(image, ViewConfig(resize=512, patches=1, train=True, flip=True),
                                        torch.Generator().manual_seed(seed))
        flipped = not torch.allclose(global_view, plain, atol=1e-5)
        assert torch.allclose(global_view, plain.flip(-1) if flipped else plain, atol=1e-5)
        assert is_window_of(crops[0], mirrored if flipped else pixels)
        assert not is_window_of(crops[0], pixels if flipped else mirrored)
        sides.append(flipped)
    assert any(sides) and not all(sides)  # the flip is drawn, not always or never taken


@pytest.mark.parametrize("resize, patches, message", [
    (100, 15, "{}100: must be at least 224 (the crop size)"),
    (223, 15, "{}223: must be at least 224 (the crop size)"),
    (512, 0, "{}0: must be at least 1"),
    (512, -3, "{}-3: must be at least 1"),
])
def test_bad_view_settings_are_one_line_errors(resize, patches, message):
    with pytest.raises(ParameterError) as caught:
        ViewConfig(resize=resize, patches=patches)
    name = "resize" if resize < 224 else "patches"
    assert str(caught.value) == message.format(f"{name}=")  # the Python API names its parameter
    assert caught.value.with_flags() == message.format(f"--{name} ")  # the CLI says the flag


def test_smallest_view_settings_are_accepted():
    crops, _ = make_views(random_image(300, 200), ViewConfig(resize=CROP, patches=1))
    assert crops.shape == (1, 3, CROP, CROP)


def test_python_api_refuses_a_resize_below_the_crop():
    import ipce

    with pytest.raises(IpceError, match="resize=100: must be at least 224"):
        ipce.load_scorer("tiny", resize=100)
    with pytest.raises(IpceError, match="resize=0: must be at least 224"):
        ipce.load_scorer("tiny", resize=0)  # an explicit 0 is refused, not replaced by the default
    with pytest.raises(IpceError, match="patches=0"):
        ipce.load_scorer("tiny", patches=0)
