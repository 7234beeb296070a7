"""Quality maps: the grid covers the image, the final score is score()'s, a learned defect shows on
its half, and `ipce explain` writes the picture and the grid."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

import ipce
from ipce.utils.maps import QualityMap, render_quality_map
from ipce.cli import main
from ipce.errors import IpceError
from ipce.models.views import crop_grid, crop_positions, grid_positions, resized_size
from tests.conftest import random_image, tiny_checkpoint
from tests.datagen import brightness_dataset, tiny_flags


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("explain") / "m.safetensors", seed=2)


def covered(qmap: QualityMap) -> np.ndarray:
    """[h, w] bool: pixels inside some box, from the boxes alone."""
    width, height = qmap.image_size
    inside = np.zeros((height, width), bool)
    for x, y, size in qmap.boxes:
        inside[int(round(y)):int(round(y + size)), int(round(x)):int(round(x + size))] = True
    return inside


@pytest.mark.parametrize("size", [(530, 300), (600, 600)])
def test_the_grid_covers_the_image_and_holds_the_methods_crops(checkpoint, size):
    scorer = ipce.load_scorer(checkpoint, patches=4)
    image = random_image(*size, seed=size[0])
    qmap = scorer.explain(image, "a red circle")
    width, height = resized_size(*size, 512)
    rows, cols, stride = crop_grid(height, width)
    assert qmap.stride == stride and qmap.image_size == size and qmap.scale == (0.0, 5.0)
    assert covered(qmap).all()
    # inside the image, up to the resize's truncation of the long side (one scale for both axes: under a pixel)
    assert all(0 <= x and 0 <= y and x + s <= size[0] + 1 and y + s <= size[1] + 1 for x, y, s in qmap.boxes)
    assert len(qmap.boxes) == len(qmap.scores) >= rows * cols
    sx = size[0] / width
    own = {(left * sx, top * size[1] / height) for top, left in crop_positions(height, width, 4, train=False)}
    assert own <= {(x, y) for x, y, _ in qmap.boxes}  # the method's own crops are on the map
    assert qmap.score == pytest.approx(scorer.score(image, "a red circle")[0], abs=1e-5)
    assert min(qmap.scores) < max(qmap.scores) and all(0 <= s <= 5 for s in qmap.scores)


def test_another_stride_changes_the_grid_not_the_score(checkpoint):
    scorer = ipce.load_scorer(checkpoint, patches=4)
    image = random_image(512, 512, seed=1)
    coarse = scorer.explain(image, "a dog", stride=100)
    assert coarse.stride == 100 and len(coarse.boxes) == len(grid_positions(512, 512, 100)) == 16
    assert covered(coarse).all()
    assert coarse.score == pytest.approx(scorer.explain(image, "a dog").score, abs=1e-5)


@pytest.mark.slow
def test_the_map_is_lower_on_the_half_with_the_learned_defect(tmp_path):
    """A tiny model trained on the brightness set (MOS = brightness) sees a dark left half as worse."""
    annotations, images = brightness_dataset(tmp_path / "data", n=40)
    assert main(["train", *tiny_flags(annotations, images, tmp_path / "run"), "--no-progress"]) == 0
    scorer = ipce.load_scorer(tmp_path / "run" / "split1" / "best.safetensors")
    rng = np.random.default_rng(1)
    pixels = np.clip(rng.normal(0.85 * 255, 20, (224, 448, 3)), 0, 255)
    pixels[:, :224] = np.clip(rng.normal(0.15 * 255, 20, (224, 224, 3)), 0, 255)  # the defect: a dark left half
    qmap = scorer.explain(Image.fromarray(pixels.astype(np.uint8)), "a photo")
    left = [s for (x, _, size), s in zip(qmap.boxes, qmap.scores) if x + size / 2 < 224]
    right = [s for (x, _, size), s in zip(qmap.boxes, qmap.scores) if x + size / 2 > 224]
    assert left and right and max(left) < min(right), (left, right)
    per_pixel = qmap.pixel_map()
    assert per_pixel[:, :224].mean() < per_pixel[:, 224:].mean()


def test_render_draws_the_map_with_a_colour_bar(checkpoint):
    image = random_image(400, 300, seed=3)
    qmap = ipce.load_scorer(checkpoint, patches=2).explain(image, "a cat", stride=64)
    drawn = render_quality_map(image, qmap)
    assert isinstance(drawn, Image.Image) and drawn.mode == "RGB" and drawn.width > 300
    pixels = np.asarray(drawn).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 100  # the image and the map, not a blank canvas


def test_explain_command_writes_a_png_and_the_grid(checkpoint, tmp_path, capsys):
    paths = []
    for i, folder in enumerate(("a", "b")):  # two images of one name: two outputs
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "gen_1.png")
        random_image(300, 260, seed=i).save(paths[-1])
    out = tmp_path / "maps"
    code = main(["explain", *map(str, paths), "--prompt", "a boat", "--checkpoint", str(checkpoint), "--patches", "2",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["gen_1-2.csv", "gen_1-2.png", "gen_1.csv", "gen_1.png"]
    rows = list(csv.DictReader((out / "gen_1.csv").open()))
    qmap = ipce.load_scorer(checkpoint, patches=2).explain(paths[0], "a boat")
    assert len(rows) == len(qmap.boxes)
    assert [float(r["score"]) for r in rows] == pytest.approx(qmap.scores, abs=1e-5)
    assert [float(r["x"]) for r in rows] == pytest.approx([b[0] for b in qmap.boxes], abs=0.01)
    with Image.open(out / "gen_1.png") as png:
        assert png.width > 300
    assert f"{qmap.score:.4f}" in capsys.readouterr().out


def test_explain_without_a_prompt_for_a_prompt_aware_model_is_one_line(checkpoint, tmp_path, capsys):
    random_image(240, 240).save(tmp_path / "a.png")
    code = main(["explain", str(tmp_path / "a.png"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "--prompt" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_explain_takes_the_generator_of_a_pil_image(checkpoint):
    """A '{generator} {prompt}' model's quality map of a PIL image uses the generator given, so its
    final score equals `score` with that generator; without one it is refused."""
    scorer = ipce.load_scorer(str(checkpoint), resize=224, patches=2, prompt_prefix="generator")
    image = random_image(240, 224, seed=60)
    qmap = scorer.explain(image, "a red car", generator="SDXL")
    assert abs(qmap.score - scorer.score([image], "a red car", ["SDXL"])[0]) < 1e-5
    assert abs(qmap.score - scorer.score([image], "a red car", ["DALLE2"])[0]) > 1e-7
    with pytest.raises(IpceError, match="generator"):
        scorer.explain(image, "a red car")
