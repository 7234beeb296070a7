"""The training step's GPU options, run on the CPU: `--fused-adamw` takes the step the default
AdamW takes, and `--log-every N` reads the loss on the host once per N steps and reports the same
loss. Tiny model."""
import copy
import csv
import json

import pytest
import torch

from ipce.config import make_config
from ipce.engine.train import batch_loss, make_optimizer
from ipce.models.scale import scale_of
from tests.conftest import make_tiny_scorer
from tests.test_performance_options import PROMPTS, views_of


def steps(model, config, crops, global_view, targets) -> torch.optim.Optimizer:
    """One training step. (Not more: the gradient of the attention's key bias is zero but for
    rounding noise, which Adam scales up to the learning rate, so two runs whose weights differ in
    the 7th digit after one step take different second steps there, fused or not.)"""
    model.train()
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    batch_loss(model(crops, global_view, PROMPTS[:2]), targets, scale_of(None)).backward()
    optimizer.step()
    return optimizer


def test_fused_adamw_takes_the_default_step():
    plain = make_tiny_scorer()
    fused = copy.deepcopy(plain)
    start = {n: p.detach().clone() for n, p in plain.named_parameters()}
    crops, global_view = views_of(2, patches=2)
    targets = torch.tensor([1.0, 4.0])
    # a large rate, so that a step moves the weights far more than the tolerance
    default = steps(plain, make_config(lr=1e-3), crops, global_view, targets)
    faster = steps(fused, make_config(lr=1e-3, fused_adamw=True), crops, global_view, targets)
    assert faster.param_groups[0]["fused"] and not default.param_groups[0]["fused"]
    moved = max((p.detach() - start[n]).abs().max().item() for n, p in plain.named_parameters())
    assert moved > 1e-4
    fused_params = dict(fused.named_parameters())
    for name, param in plain.named_parameters():
        assert (fused_params[name] - param).abs().max().item() <= 1e-6, name


def test_log_every_must_be_positive():
    from ipce.errors import IpceError

    with pytest.raises(IpceError, match="--log-every"):
        make_config(log_every=0)


@pytest.mark.slow
def test_log_every_reads_the_loss_once_per_n_steps_with_the_same_loss(tmp_path, monkeypatch):
    from ipce.cli import main
    from tests.datagen import brightness_dataset, tiny_flags

    annotations, images = brightness_dataset(tmp_path / "data", n=40)
    reads = []
    item = torch.Tensor.item

    def counted(tensor):  # loss reads by the training loop, wherever they come from
        import sys

        if sys._getframe(1).f_code.co_name == "train_one_epoch":
            reads.append(tensor.dtype)
        return item(tensor)
    monkeypatch.setattr(torch.Tensor, "item", counted)
    assert main(["train", *tiny_flags(annotations, images, tmp_path / "plain", epochs=1)]) == 0
    every_step = len(reads)
    reads.clear()
    assert main(["train", *tiny_flags(annotations, images, tmp_path / "rare", epochs=1), "--log-every", "100",
                 "--fused-adamw"]) == 0
    assert every_step == 4 + 1 and len(reads) == 1  # 32 training images in batches of 8: 4 steps, then the mean
    config = json.loads((tmp_path / "rare" / "config.json").read_text())
    assert config["log_every"] == 100 and config["fused_adamw"]

    def history(run):
        return [json.loads(line) for line in (run / "split1" / "metrics.jsonl").read_text().splitlines()]

    def predictions(run):
        return [float(r["score"]) for r in csv.DictReader(open(run / "split1" / "val_predictions.csv", newline=""))]
    plain, rare = history(tmp_path / "plain"), history(tmp_path / "rare")
    assert [h["train_loss"] for h in rare] == pytest.approx([h["train_loss"] for h in plain], abs=1e-6)
    assert predictions(tmp_path / "rare") == pytest.approx(predictions(tmp_path / "plain"), abs=1e-5)
