import pytest
import torch

from ipce.errors import WeightsError
from ipce.models import backbone
from ipce.models.backbone import infer_config, load_backbone, model_config


def test_tiny_is_the_documented_architecture():
    # 2 layers of width 128 in each tower, 32-px patches, CLIP's vocabulary and context, a 64-d embedding,
    # read off the built model's weights rather than its config
    model, config, _ = load_backbone("tiny")
    assert model.visual.conv1.weight.shape == (128, 3, 32, 32)
    assert len(model.visual.transformer.resblocks) == 2 and len(model.transformer.resblocks) == 2
    assert model.token_embedding.weight.shape == (49408, 128) and model.positional_embedding.shape == (77, 128)
    assert infer_config(model.state_dict()) == config  # the config it reports is the one it has
    assert model.visual.transformer.resblocks[0].attn.num_heads == 128 // 64
    assert model.transformer.resblocks[0].attn.num_heads == 128 // 64
    assert model.visual(torch.zeros(1, 3, 224, 224)).shape == (1, 64)


def test_openai_backbones_use_quick_gelu():
    model, _, _ = load_backbone("tiny")
    act = model.visual.transformer.resblocks[0].mlp.gelu
    assert type(act).__name__ == "QuickGELU"


def test_random_named_backbone_builds_without_weights():
    model, config, description = load_backbone("random:ViT-B-32")
    assert config == model_config("ViT-B-32") and "random" in description
    assert model.visual.conv1.weight.shape == (768, 3, 32, 32)


def test_missing_weights_name_the_paths_and_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("IPCE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(WeightsError) as err:
        load_backbone("ViT-B-32")
    message = str(err.value)
    assert str(tmp_path / "ViT-B-32.pt") in message and "ViT-B-32.pt" in message
    assert "ipce weights fetch ViT-B-32" in message and "openaipublic" in message and "\n" not in message


def test_weights_are_found_in_the_cache(tmp_path, monkeypatch):
    tiny, _, _ = load_backbone("tiny")
    cache = tmp_path / "home" / ".cache" / "clip"
    cache.mkdir(parents=True)
    torch.save(tiny.state_dict(), cache / "tiny-cached.pt")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("IPCE_WEIGHTS", raising=False)
    assert backbone.find_weights("tiny-cached") == cache / "tiny-cached.pt"


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(WeightsError, match="unknown checkpoint or backbone 'ViT-Q-99'"):
        model_config("ViT-Q-99")


def test_a_mistyped_backbone_is_unknown_with_the_nearest_names_not_missing_weights(tmp_path, monkeypatch):
    from ipce.models.backbone import load_backbone

    monkeypatch.setenv("IPCE_WEIGHTS", str(tmp_path))  # no weight file anywhere: a missing one would be said first
    with pytest.raises(WeightsError, match=r"unknown checkpoint or backbone 'ViT-B-23'.*nearest names: ViT-B-32"):
        load_backbone("ViT-B-23")
