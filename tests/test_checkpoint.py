"""Checkpoints: ours round-trip; the seed's and OpenAI's formats load; pickles that run code don't."""
import os
import pickle

import pytest
import torch

import ipce
from ipce.errors import WeightsError
from ipce.models.backbone import infer_config, read_state_dict
from ipce.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from ipce.models.reference import original_scores
from tests.conftest import make_tiny_scorer, random_image


def test_our_checkpoint_round_trips(tmp_path):
    model = make_tiny_scorer(seed=3)
    path = save_checkpoint(tmp_path / "best.safetensors", model,
                           {"backbone": "tiny", "model_config": infer_config(model.clip.state_dict()),
                            "resize": 384, "patches": 7, "metrics": {"srcc": 0.5}})
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]  # no temp file left
    meta = read_metadata(path)
    assert meta["resize"] == 384 and meta["metrics"]["srcc"] == 0.5 and meta["levels"][0] == "badly"
    loaded, meta2 = load_checkpoint(path)
    for key, value in model.clip.state_dict().items():
        assert torch.equal(value, loaded.clip.state_dict()[key]), key
    scorer = ipce.load_scorer(path)
    assert scorer.members[0].views.resize == 384 and scorer.members[0].views.patches == 7
    image = random_image(300, 300)
    direct = ipce.load_scorer(path, resize=512, patches=15).score(image, "a cat")
    assert direct != scorer.score(image, "a cat")  # overrides are honoured


def seed_save(model, path, half: bool):
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.clip.state_dict().items()}
    torch.save({"epoch": 3, "model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []},
                "loss": 0.42}, path)


@pytest.mark.parametrize("half", [False, True])
def test_seed_checkpoint_loads_and_reproduces_the_seed_evaluation(tmp_path, half):
    model = make_tiny_scorer(seed=4)
    path = tmp_path / "seed_epoch3.pt"
    seed_save(model, path, half)
    images = [random_image(400, 300, seed=1), random_image(800, 900, seed=2), random_image(1100, 1040, seed=3)]
    prompts = ["statue of a man", "a tray of sushi", "concept art of giant ogres"]
    scorer = ipce.load_scorer(str(path), resize=768, patches=15)
    ours = torch.tensor(scorer.score(images, prompts))
    clip = scorer.members[0].model.clip  # the loaded weights (fp16 rounded when saved in fp16)
    reference = original_scores(clip, images, prompts, resize=768, patches=15)
    assert torch.allclose(ours, reference, atol=1e-4)
    default = ipce.load_scorer(str(path))
    assert default.members[0].views.resize == 512 and default.members[0].views.patches == 15


def test_architecture_is_inferred_from_shapes():
    model = make_tiny_scorer()
    config = infer_config(model.clip.state_dict())
    assert config["embed_dim"] == 64
    assert config["vision_cfg"] == {"image_size": 224, "layers": 2, "width": 128, "patch_size": 32}
    assert config["text_cfg"]["layers"] == 2 and config["text_cfg"]["heads"] == 2
    assert config["text_cfg"]["context_length"] == 77 and config["text_cfg"]["vocab_size"] == 49408


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/ipce-pwned",))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = "/tmp/ipce-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model_state_dict": {"w": Exploit()}}, f)
    torch.save({"model_state_dict": {"x": torch.zeros(1)}, "payload": Exploit()}, tmp_path / "evil2.pt")
    for bad in (path, tmp_path / "evil2.pt"):
        with pytest.raises(WeightsError) as err:
            load_checkpoint(bad)
        assert str(bad) in str(err.value) and "\n" not in str(err.value)
        assert "never unpickles" in str(err.value) and "weights_only" not in str(err.value)  # no unsafe advice
    assert not os.path.exists(marker)


def test_torchscript_archive_is_read_through_jit(tmp_path):
    model = make_tiny_scorer(seed=5)
    traced = torch.jit.trace(model.clip.eval(), (torch.randn(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long)),
                             check_trace=False)
    traced.save(str(tmp_path / "ViT-tiny.pt"))
    state = read_state_dict(tmp_path / "ViT-tiny.pt")
    loaded, meta = load_checkpoint(tmp_path / "ViT-tiny.pt")
    assert meta["format"] == "foreign" and meta["resize"] == 512
    assert torch.equal(loaded.clip.visual.conv1.weight, model.clip.visual.conv1.weight)
    assert "attn_mask" not in state


def test_missing_and_empty_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(WeightsError, match="nope.safetensors: no such checkpoint"):
        load_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(WeightsError, match="empty.pt: the weight file is empty"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(WeightsError, match="text.pt: cannot read weights"):
        load_checkpoint(tmp_path / "text.pt")
