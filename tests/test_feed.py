"""`--feed uint8`: the loader sends each image's 8-bit pixels and crop corners, and the views made
from them where the batch goes are make_views' views, crops, flips and global view alike. CPU."""
import pytest
import torch

from ipce.datasets.loader import ViewDataset, make_loader
from ipce.datasets.sources import Record
from ipce.models.views import ViewConfig, make_pixels, make_views, views_from_pixels
from tests.conftest import random_image

CONFIGS = [ViewConfig(resize=256, patches=5), ViewConfig(resize=300, patches=8, train=True, flip=True),
           ViewConfig(resize=224, patches=3)]
SIZES = [(333, 250), (250, 333), (1100, 700), (224, 224)]


@pytest.mark.parametrize("config", CONFIGS)
def test_views_from_pixels_are_make_views(config):
    for i, size in enumerate(SIZES):
        image = random_image(*size, seed=i).convert("RGBA" if i == 1 else "RGB")  # RGBA: converted alike
        want = make_views(image, config, torch.Generator().manual_seed(i))
        pixels, corners = make_pixels(image, config, torch.Generator().manual_seed(i))
        assert pixels.dtype == torch.uint8 and pixels.is_contiguous() and pixels.shape[2] == 3
        got = views_from_pixels(pixels, corners)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_a_512_px_image_sends_a_twelfth_of_its_float_views_bytes():
    pixels, corners = make_pixels(random_image(512, 512), ViewConfig(resize=512, patches=15))
    crops, global_view = views_from_pixels(pixels, corners)
    sent, floats = pixels.numel() * pixels.element_size(), (crops.numel() + global_view.numel()) * 4
    assert 12 < floats / sent < 12.5


def test_flips_and_random_corners_follow_the_generator():
    config = ViewConfig(resize=300, patches=8, train=True, flip=True)
    image = random_image(333, 250, seed=5)
    drawn = {tuple(make_pixels(image, config, torch.Generator().manual_seed(s))[1]) for s in range(6)}
    assert len(drawn) > 1  # the corners are drawn, so the equality above compares real draws
    flipped = [make_pixels(image, config, torch.Generator().manual_seed(s))[0] for s in range(12)]
    assert any(not torch.equal(flipped[0], f) for f in flipped)


def test_the_loader_sends_pixels_and_its_batches_give_the_float_batches_views(tmp_path):
    records = []
    for i, size in enumerate(SIZES[:3] * 2):
        path = tmp_path / f"gen_{i}.png"
        random_image(*size, seed=i).save(path)
        records.append(Record(image=path, prompt=f"prompt {i}", target=float(i % 5), name=path.name))
    config = ViewConfig(resize=256, patches=4, train=True, flip=True)
    plain = make_loader(ViewDataset(records, config, seed=7), 4, shuffle=True, workers=0, seed=3)
    packed = make_loader(ViewDataset(records, config, seed=7, pixels=True), 4, shuffle=True, workers=0, seed=3)
    count = 0
    for want, got in zip(plain, packed):
        assert got.crops is None and len(got.pixels) == len(want) and all(p.dtype == torch.uint8 for p in got.pixels)
        crops, global_view = got.views_on("cpu")
        assert torch.equal(crops, want.crops) and torch.equal(global_view, want.global_view)
        assert got.prompts == want.prompts and torch.equal(got.indices, want.indices)
        count += 1
    assert count == 2


def test_an_empty_pixel_batch_gives_empty_views(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    dataset = ViewDataset([Record(image=bad, prompt="p", target=None, name=bad.name)], ViewConfig(224, 3), tolerant=True, pixels=True)
    batch = next(iter(make_loader(dataset, 2, shuffle=False, workers=0)))
    assert batch.errors and batch.pixels == []
    crops, global_view = batch.views_on("cpu", 3)
    assert crops.shape == (0, 3, 3, 224, 224) and global_view.shape == (0, 3, 224, 224)


@pytest.mark.slow
def test_training_fed_uint8_gives_the_float_feeds_run(tmp_path):
    import csv
    import json

    from ipce.cli import main
    from tests.datagen import brightness_dataset, tiny_flags

    annotations, images = brightness_dataset(tmp_path / "data", n=16)
    assert main(["train", *tiny_flags(annotations, images, tmp_path / "float", epochs=1)]) == 0
    assert main(["train", *tiny_flags(annotations, images, tmp_path / "uint8", epochs=1), "--feed", "uint8"]) == 0
    assert json.loads((tmp_path / "uint8" / "config.json").read_text())["feed"] == "uint8"

    def predictions(run):
        return [r["score"] for r in csv.DictReader(open(run / "split1" / "val_predictions.csv", newline=""))]
    assert predictions(tmp_path / "uint8") == predictions(tmp_path / "float")  # the same views: the same digits


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_views_from_pixels_on_cuda_match_make_views():
    config = ViewConfig(resize=300, patches=8, train=True, flip=True)
    for i, size in enumerate(SIZES):
        image = random_image(*size, seed=i)
        want = make_views(image, config, torch.Generator().manual_seed(i))
        pixels, corners = make_pixels(image, config, torch.Generator().manual_seed(i))
        crops, global_view = views_from_pixels(pixels.cuda(), corners)
        assert torch.allclose(crops.cpu(), want[0], atol=1e-6) and torch.allclose(global_view.cpu(), want[1], atol=1e-5)
