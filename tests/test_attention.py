"""`--attention sdpa` (ipce/models/attention.py) computes what nn.MultiheadAttention computes:
features, scores and gradients within 1e-5, the same parameters and state-dict keys. CPU."""
import copy

import pytest
import torch
from torch import nn

from ipce.models.attention import SdpaAttention, use_sdpa
from ipce.models.backbone import load_backbone
from ipce.models.correspondence import CorrespondenceScorer, score_from_probs
from tests.conftest import random_image, tiny_checkpoint
from tests.test_performance_options import PROMPTS, views_of


def pair(backbone: str = "tiny") -> tuple[CorrespondenceScorer, CorrespondenceScorer]:
    """(nn.MultiheadAttention model, the same weights through SDPA)."""
    torch.manual_seed(0)
    clip, _, _ = load_backbone(backbone)
    plain = CorrespondenceScorer(clip).eval()
    fast = copy.deepcopy(plain)
    assert use_sdpa(fast.clip) == len(fast.clip.visual.transformer.resblocks) + len(fast.clip.transformer.resblocks)
    return plain, fast


def outputs(model: CorrespondenceScorer, crops, global_view, prompts) -> dict[str, torch.Tensor]:
    """Image features, text features (padding cut and 77-token), scores, and every gradient of a loss
    through all of them, in training mode (the path training takes)."""
    model.train()
    model.zero_grad()
    images = model.image_features(crops, global_view)
    texts = model.text_features(prompts)
    uncut = model.encode_prompts(prompts, cut_padding=False)
    scores = score_from_probs(model.level_probs(images, texts))  # what forward does with them
    (scores.sum() + images.square().sum() + texts.square().mean() + (uncut * texts).sum()).backward()
    found = {"images": images, "texts": texts, "uncut texts": uncut, "scores": scores}
    found.update({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    model.eval()
    return found


def assert_same(plain, fast, crops, global_view, prompts):
    want, got = outputs(plain, crops, global_view, prompts), outputs(fast, crops, global_view, prompts)
    assert want.keys() == got.keys() and len(want) > 20  # every trained tensor has a gradient on both sides
    for name in want:
        scale = max(1.0, want[name].abs().max().item())
        assert (got[name] - want[name]).abs().max().item() <= 1e-5 * scale, name


def test_sdpa_equals_multihead_attention_on_the_tiny_model():
    plain, fast = pair()
    crops, global_view = views_of(2, patches=2)
    assert_same(plain, fast, crops, global_view, PROMPTS[:2])


@pytest.mark.slow
def test_sdpa_equals_multihead_attention_on_vit_b_32():
    plain, fast = pair("random:ViT-B-32")
    crops, global_view = views_of(2, patches=1)
    assert_same(plain, fast, crops, global_view, PROMPTS[:2])


def test_the_text_tower_runs_is_causal_without_a_mask_and_the_image_tower_unmasked(monkeypatch):
    plain, fast = pair()
    causal = [m.causal for m in fast.clip.modules() if isinstance(m, SdpaAttention)]
    assert causal == [False] * len(fast.clip.visual.transformer.resblocks) + [True] * len(fast.clip.transformer.resblocks)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, **kwargs):
        calls.append((q.shape[2], attn_mask is None, is_causal))
        return sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kwargs)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        fast.encode_prompts(PROMPTS[:2], cut_padding=False)
        fast.encode_views(views_of(1, patches=1)[1])
    text, image = calls[:2], calls[2:]
    assert text == [(77, True, True)] * 2  # batch-first [B, heads, L, d]; the causal mask as is_causal
    assert image == [(50, True, False)] * 2  # 7 x 7 patches + the class token, no mask


def test_same_parameters_and_state_dict_keys_and_back():
    plain, fast = pair()
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), plain.state_dict().values()))
    fast.load_state_dict(plain.state_dict())  # strict: the same keys load either way
    use_sdpa(fast.clip, enabled=False)
    assert not any(isinstance(m, SdpaAttention) for m in fast.modules())
    assert sum(isinstance(m, nn.MultiheadAttention) for m in fast.modules()) == 4


def test_anything_but_plain_self_attention_takes_the_parent_path():
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(64, 2, batch_first=True)
    x, y = torch.randn(2, 5, 64), torch.randn(2, 7, 64)
    want_cross, want_weights = attn(x, y, y)[0], attn(x, x, x)[1]
    attn.__class__ = SdpaAttention
    got_cross, got_weights = attn(x, y, y)[0], attn(x, x, x)[1]  # cross-attention; weights asked for
    assert torch.allclose(got_cross, want_cross, atol=1e-6) and torch.allclose(got_weights, want_weights)
    seq_first = nn.MultiheadAttention(64, 2, batch_first=False)
    want = seq_first(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), need_weights=False)[0]
    seq_first.__class__ = SdpaAttention
    xt = x.transpose(0, 1)
    assert torch.allclose(seq_first(xt, xt, xt, need_weights=False)[0], want, atol=1e-6)


def test_a_checkpoint_scores_the_same_through_sdpa(tmp_path):
    import csv

    import ipce
    from ipce.cli import main

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors", seed=3)
    images = [random_image(240 + 40 * i, 230, seed=i) for i in range(3)]
    plain = ipce.load_scorer(str(ckpt), resize=224, patches=2).score(images, PROMPTS[:3])
    scorer = ipce.load_scorer(str(ckpt), resize=224, patches=2, attention="sdpa")
    assert isinstance(scorer.members[0].model.clip.transformer.resblocks[0].attn, SdpaAttention)
    assert scorer.score(images, PROMPTS[:3]) == pytest.approx(plain, abs=1e-5)
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"gen_{i}.png")
        image.save(paths[-1])
    common = ["score", *map(str, paths), "--prompt", "a cat", "--checkpoint", str(ckpt), "--resize", "224",
              "--patches", "2"]
    assert main([*common, "--out", str(tmp_path / "a.csv")]) == 0
    assert main([*common, "--attention", "sdpa", "--out", str(tmp_path / "b.csv")]) == 0

    def scores(path):
        return [float(r["score"]) for r in csv.DictReader(open(path, newline=""))]
    assert scores(tmp_path / "b.csv") == pytest.approx(scores(tmp_path / "a.csv"), abs=1e-5)
    with pytest.raises(ipce.errors.IpceError, match="--attention"):
        ipce.load_scorer(str(ckpt), attention="flash")


def test_multihead_attention_stays_the_default(tmp_path):
    import ipce

    scorer = ipce.load_scorer(str(tiny_checkpoint(tmp_path / "tiny.safetensors", seed=3)))
    assert not any(isinstance(m, SdpaAttention) for m in scorer.members[0].model.modules())
    assert sum(isinstance(m, nn.MultiheadAttention) for m in scorer.members[0].model.modules()) == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sdpa_equals_multihead_attention_on_cuda():
    """On CUDA SDPA picks fused kernels (flash / memory-efficient): fp32 within 1e-4, bf16 autocast
    scores within 0.02 of fp32 as `--precision bf16` is."""
    plain, fast = pair()
    plain, fast = plain.cuda(), fast.cuda()
    crops, global_view = (t.cuda() for t in views_of(2, patches=2))
    with torch.no_grad():
        for model in (plain, fast):
            model.text_cache.clear()
        torch.backends.cuda.matmul.allow_tf32 = False
        want, got = plain(crops, global_view, PROMPTS[:2]), fast(crops, global_view, PROMPTS[:2])
        assert torch.allclose(got, want, atol=1e-4)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = fast(crops, global_view, PROMPTS[:2])
        assert (low - want).abs().mean() <= 0.02
