"""`ipce export --format onnx` and `--runtime onnxruntime`: the two towers as ONNX graphs score as PyTorch
does, within 1e-4 in fp32, through the API, `ipce score` and `ipce predict`."""
from __future__ import annotations

import csv
import json

import pytest
import torch

import ipce
from ipce.cli import main
from ipce.errors import IpceError, WeightsError
from ipce.models.backbone import infer_config, load_backbone
from ipce.models.checkpoint import save_checkpoint
from ipce.models.correspondence import CorrespondenceScorer
from tests.conftest import random_image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

PROMPTS = ["two red circles on a blue background", "a cat", "a very long prompt " * 30]  # the last one is cut at 77


def checkpoint_of(backbone: str, path, seed: int = 0):
    torch.manual_seed(seed)
    clip, _, _ = load_backbone(backbone)
    model = CorrespondenceScorer(clip).eval()
    return save_checkpoint(path, model, {"backbone": backbone, "model_config": infer_config(clip.state_dict()),
                                         "resize": 224, "patches": 3})


def images(folder, count: int = 3):
    folder.mkdir(exist_ok=True)
    paths = []
    for i, size in enumerate([(224, 224), (300, 260), (520, 240)][:count]):
        paths.append(folder / f"gen_{i}.png")
        random_image(*size, seed=i).save(paths[-1])
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["tiny", "random:ViT-B-32"])
def test_onnx_scores_equal_pytorch_within_1e4(backbone, tmp_path):
    checkpoint = checkpoint_of(backbone, tmp_path / "ckpt.safetensors")
    folder = tmp_path / "onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(folder)]) == 0
    assert {"image_encoder.onnx", "text_encoder.onnx", "config.json", "README.md"} <= {p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "ipce-onnx" and config["backbone"] == backbone and config["resize"] == 224
    paths = images(tmp_path / "img")
    torch_scorer = ipce.load_scorer(checkpoint, batch_size=2)
    onnx_scorer = ipce.load_scorer(folder, runtime="onnxruntime", batch_size=2)  # batches of 2 and then 1
    for prompts in (PROMPTS, PROMPTS[1]):
        expected, got = torch_scorer.score(paths, prompts), onnx_scorer.score(paths, prompts)
        assert max(abs(a - b) for a, b in zip(expected, got)) < 1e-4, (expected, got)
    assert len(set(expected)) == len(paths)  # distinct scores: the comparison can tell images apart


@pytest.mark.slow
def test_score_and_predict_run_on_onnxruntime(tmp_path, capsys):
    checkpoint = checkpoint_of("tiny", tmp_path / "ckpt.safetensors", seed=1)
    folder = tmp_path / "onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(folder)]) == 0
    paths = images(tmp_path / "img")
    capsys.readouterr()
    tables = {}
    for runtime, source in (("torch", checkpoint), ("onnxruntime", folder)):
        out = tmp_path / f"score-{runtime}.csv"
        assert main(["score", *map(str, paths), "--prompt", PROMPTS[0], "--checkpoint", str(source), "--device", "cpu",
                     "--runtime", runtime, "--no-progress", "--out", str(out)]) == 0
        tables[runtime] = [float(r["score"]) for r in csv.DictReader(out.open())]
    assert max(abs(a - b) for a, b in zip(tables["torch"], tables["onnxruntime"])) < 1e-4

    predicted = {}
    for runtime, source in (("torch", checkpoint), ("onnxruntime", folder)):
        out = tmp_path / f"predict-{runtime}.csv"
        assert main(["predict", "--images", str(tmp_path / "img"), "--prompt", PROMPTS[0], "--checkpoint", str(source),
                     "--runtime", runtime, "--device", "cpu", "--workers", "0", "--no-progress", "--out", str(out)]) == 0
        predicted[runtime] = {r["image"]: float(r["score"]) for r in csv.DictReader(out.open())}
    assert predicted["torch"].keys() == predicted["onnxruntime"].keys() and len(predicted["torch"]) == len(paths)
    assert max(abs(predicted["torch"][k] - predicted["onnxruntime"][k]) for k in predicted["torch"]) < 1e-4
    # the folder without --runtime onnxruntime: one line saying so
    assert main(["predict", "--images", str(tmp_path / "img"), "--prompt", PROMPTS[0], "--checkpoint", str(folder),
                 "--device", "cpu", "--workers", "0", "--no-progress", "--out", str(tmp_path / "p.csv")]) == 1
    err = capsys.readouterr().err
    assert "score it with --runtime onnxruntime" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(WeightsError, match="score it with --runtime onnxruntime"):
        ipce.load_scorer(folder)
    with pytest.raises(IpceError, match="needs the PyTorch runtime"):
        ipce.load_scorer(folder, runtime="onnxruntime").explain(paths[0], PROMPTS[0])


def test_onnxruntime_refuses_what_it_cannot_run(tmp_path):
    checkpoint = checkpoint_of("tiny", tmp_path / "ckpt.safetensors")
    with pytest.raises(WeightsError, match="not a folder of ONNX graphs"):
        ipce.load_scorer(checkpoint, runtime="onnxruntime")
    folder = tmp_path / "model"
    assert main(["export", str(checkpoint), "--out", str(folder)]) == 0  # safetensors: a PyTorch folder
    with pytest.raises(WeightsError, match="not a folder of ONNX graphs"):
        ipce.load_scorer(folder, runtime="onnxruntime")
    with pytest.raises(IpceError, match="scores in fp32"):
        ipce.load_scorer(folder, runtime="onnxruntime", precision="bf16")
