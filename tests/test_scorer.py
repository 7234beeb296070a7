"""The scorer against a plain re-derivation of DESIGN.md section 1, and its training contract."""
import torch
import torch.nn.functional as F

from ipce.models.views import ViewConfig, make_views
from ipce.models.correspondence import level_texts, score_from_probs
from ipce.models.reference import original_scores
from tests.conftest import make_tiny_scorer, random_image

PROMPTS = ["a red circle", "two dogs playing in the snow, oil painting", "statue of a man",
           "a kitchen without a refrigerator"]
SIZES = [(200, 300), (512, 512), (700, 640), (1100, 1040)]  # below, at, above 512, above 1024


def batch_views(images, resize=512, patches=15):
    pairs = [make_views(im, ViewConfig(resize=resize, patches=patches)) for im in images]
    return torch.stack([c for c, _ in pairs]), torch.stack([g for _, g in pairs])


def test_five_texts_follow_the_template():
    # docs/DESIGN.md section 1, written out: the five levels from worst to best
    assert level_texts("a cat") == ["a photo that badly matches 'a cat'", "a photo that poorly matches 'a cat'",
                                    "a photo that fairly matches 'a cat'", "a photo that well matches 'a cat'",
                                    "a photo that perfectly matches 'a cat'"]


def test_score_maps_expected_level_to_0_5():
    assert torch.allclose(score_from_probs(torch.eye(5)), torch.tensor([0.0, 1.25, 2.5, 3.75, 5.0]))
    assert torch.allclose(score_from_probs(torch.full((1, 5), 0.2)), torch.tensor([2.5]))


def test_scorer_equals_full_matrix_rederivation():
    model = make_tiny_scorer(seed=1)
    images = [random_image(w, h, seed=i) for i, (w, h) in enumerate(SIZES)]
    crops, global_view = batch_views(images)
    with torch.no_grad():
        ours = model(crops, global_view, PROMPTS)
    reference = original_scores(model.clip, images, PROMPTS, resize=512, patches=15)
    assert ours.shape == (4,)
    assert torch.allclose(ours, reference, atol=1e-5), (ours, reference)
    assert len(set(ours.tolist())) == 4  # distinct inputs, distinct scores


def test_padding_cut_changes_nothing():
    model = make_tiny_scorer()
    tokens = model.tokenize(["a cat", "a very long prompt " * 30, "x"])
    with torch.no_grad():
        cut = model.encode_tokens(tokens, cut_padding=True)
        full = model.encode_tokens(tokens, cut_padding=False)
        library = model.clip.encode_text(tokens)
    assert torch.allclose(cut, full, atol=1e-5) and torch.allclose(full, library, atol=1e-5)


def test_long_prompts_are_truncated_with_end_of_text_last():
    model = make_tiny_scorer()
    tokens = model.tokenize(["word " * 200])
    assert tokens.shape[1] == 77 and (tokens[:, -1] == model.eot_id).all()


def test_cached_text_features_equal_fresh_ones():
    model = make_tiny_scorer()
    with torch.no_grad():
        first = model.text_features(["a cat", "a dog", "a cat"])
        assert set(model.text_cache) == {"a cat", "a dog"}
        cached = model.text_features(["a dog", "a cat"])
    with torch.enable_grad():
        fresh = model.text_features(["a dog", "a cat"])
    assert torch.allclose(cached, fresh.detach(), atol=1e-6)
    assert torch.allclose(first[0], first[2])
    model.train()
    assert model.text_cache == {}  # weights may change: the cache goes


def test_gradients_reach_both_encoders_and_logit_scale_is_frozen():
    model = make_tiny_scorer().train()
    images = [random_image(256, 256, seed=i) for i in range(2)]
    crops, global_view = batch_views(images, patches=3)
    scores = model(crops, global_view, ["a red circle", "a blue square"])
    F.l1_loss(scores, torch.tensor([4.0, 1.0])).backward()
    clip = model.clip
    assert clip.visual.conv1.weight.grad is not None and clip.visual.conv1.weight.grad.abs().sum() > 0
    assert clip.token_embedding.weight.grad is not None and clip.token_embedding.weight.grad.abs().sum() > 0
    assert clip.transformer.resblocks[0].attn.in_proj_weight.grad.abs().sum() > 0
    assert not clip.logit_scale.requires_grad and clip.logit_scale.grad is None


def test_a_training_step_moves_scores_toward_the_target():
    model = make_tiny_scorer().train()
    crops, global_view = batch_views([random_image(256, 256)], patches=2)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = model(crops, global_view, ["a cat"]).item()
    for _ in range(5):
        opt.zero_grad()
        F.l1_loss(model(crops, global_view, ["a cat"]), torch.tensor([5.0])).backward()
        opt.step()
    assert model(crops, global_view, ["a cat"]).item() > before + 0.05
