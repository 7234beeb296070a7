"""`ipce.ray.ScoreBatch`, the callable a Ray Data pipeline passes to `map_batches`: the scores of
`load_scorer`, a bad image named in its row and the rest scored; in a local Ray Data pipeline too."""
import io
import math
import os
from pathlib import Path

import numpy as np
import pytest

import ipce
from ipce.errors import IpceError
from ipce.ray import ScoreBatch
from tests.conftest import random_image, tiny_checkpoint

OPTIONS = {"resize": 224, "patches": 2}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("raydata") / "m.safetensors", seed=11)


def png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    random_image(120 + 8 * seed, 100, seed=seed).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_batch_gets_the_scores_of_load_scorer_and_a_bad_image_its_reason(checkpoint, tmp_path):
    files = []
    for seed in range(2):
        files.append(tmp_path / f"gen_{seed}.png")
        files[-1].write_bytes(png_bytes(seed))
    cells = [png_bytes(5), b"\x89PNG broken", str(files[0]), str(files[1])]
    prompts = ["a red car", "a castle", "a blue boat", "a dog"]
    batch = {"image": np.asarray(cells, dtype=object), "prompt": np.asarray(prompts), "id": np.arange(4)}
    out = ScoreBatch(str(checkpoint), **OPTIONS)(batch)

    from PIL import Image
    expected = ipce.load_scorer(str(checkpoint), **OPTIONS).score(
        [Image.open(io.BytesIO(cells[0])), *files], [prompts[0], prompts[2], prompts[3]])
    scores = out["score"]
    assert math.isnan(scores[1]) and "row 1" in out["error"][1]
    assert [scores[0], scores[2], scores[3]] == pytest.approx(expected, abs=1e-5)
    assert list(out["error"][[0, 2, 3]]) == ["", "", ""] and list(out["id"]) == [0, 1, 2, 3]


def test_a_missing_column_is_one_line_naming_it(checkpoint):
    with pytest.raises(IpceError, match=r"no column 'prompt' \(columns: image\); pass image_column= or prompt_column="):
        ScoreBatch(str(checkpoint), **OPTIONS)({"image": np.asarray([png_bytes(1)], dtype=object)})


@pytest.mark.slow  # a Ray instance takes seconds to start, its actor to import torch
def test_map_batches_in_a_local_ray_data_pipeline(checkpoint):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1",
                                       "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                                                      os.environ.get("PYTHONPATH", "")])}})
    try:
        rows = [{"key": i, "image": png_bytes(i), "prompt": f"picture {i}"} for i in range(6)]
        rows[3]["image"] = b"not an image"
        ds = ray.data.from_items(rows).map_batches(
            ScoreBatch, fn_constructor_kwargs={"checkpoint": str(checkpoint), **OPTIONS}, batch_size=2,
            concurrency=1)
        found = sorted(ds.take_all(), key=lambda row: row["key"])
    finally:
        ray.shutdown()
    from PIL import Image
    good = [i for i in range(6) if i != 3]
    expected = ipce.load_scorer(str(checkpoint), **OPTIONS).score(
        [Image.open(io.BytesIO(rows[i]["image"])) for i in good], [rows[i]["prompt"] for i in good])
    assert [found[i]["score"] for i in good] == pytest.approx(expected, abs=1e-5)
    assert math.isnan(found[3]["score"]) and found[3]["error"] and [found[i]["error"] for i in good] == [""] * 5
