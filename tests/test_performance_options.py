"""The speed options give the scores the plain computation gives (no timing here: the speed
goals live in benchmarks/). Tiny model, CPU."""
import copy
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ipce.models.views import ViewConfig, make_views, to_normalized_tensor
from ipce.models import speed
from ipce.models.backbone import load_backbone
from ipce.models.correspondence import CorrespondenceScorer, QuickGELUMLP, fuse_quick_gelu, length_groups
from tests.conftest import make_tiny_scorer, random_image, tiny_checkpoint

PROMPTS = ["a cat", "two dogs playing in the snow next to a frozen lake at dawn, oil painting, warm light",
           "x", "statue of a man on a horse in a city square", "a cat",
           "word " * 100]  # a duplicate and one prompt longer than the context


def views_of(count: int, patches: int = 3, size=(256, 256)):
    pairs = [make_views(random_image(*size, seed=i), ViewConfig(resize=256, patches=patches)) for i in range(count)]
    return torch.stack([c for c, _ in pairs]), torch.stack([g for _, g in pairs])


def test_length_groups_cover_every_item_once():
    lengths = [10, 50, 12, 48, 30, 11, 77, 9]
    for overhead in (0, 16, 64, 10_000):
        groups = length_groups(lengths, 5, overhead)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert len(length_groups(lengths, 5, 10_000)) == 1  # calls expensive: one batch
    assert all(len({lengths[i] for i in g}) == 1 for g in length_groups(lengths, 5, 0))  # free: no padding
    assert length_groups([], 5, 64) == []


def test_grouped_text_features_equal_one_padded_batch():
    model = make_tiny_scorer()
    with torch.no_grad():
        model.group_texts = False
        single = model.encode_prompts(PROMPTS)
        model.group_texts = True
        model.group_overhead = 0  # as many groups as lengths
        grouped = model.encode_prompts(PROMPTS)
        uncut = model.encode_prompts(PROMPTS, cut_padding=False)
    assert grouped.shape == (len(PROMPTS), 5, 64)
    assert torch.allclose(grouped, single, atol=1e-5) and torch.allclose(grouped, uncut, atol=1e-5)
    assert torch.allclose(grouped[0], grouped[4], atol=1e-6)  # order kept, duplicates alike


def test_grouped_text_features_carry_gradients():
    model = make_tiny_scorer().train()
    model.group_overhead = 0
    feats = model.text_features(PROMPTS[:4])
    feats.sum().backward()
    assert model.clip.token_embedding.weight.grad.abs().sum() > 0


def test_fused_quick_gelu_equals_open_clip_mlp():
    model = make_tiny_scorer()
    plain = copy.deepcopy(model)
    assert fuse_quick_gelu(plain.clip, enabled=False) == 4  # 2 image + 2 text blocks
    assert isinstance(model.clip.visual.transformer.resblocks[0].mlp, QuickGELUMLP)
    assert list(model.state_dict()) == list(plain.state_dict())  # checkpoints unchanged
    crops, global_view = views_of(2)
    prompts = PROMPTS[:2]
    with torch.no_grad():
        assert torch.allclose(model(crops, global_view, prompts), plain(crops, global_view, prompts), atol=1e-5)
    model.train(), plain.train()
    targets = torch.tensor([1.0, 4.0])
    for m in (model, plain):
        F.l1_loss(m(crops, global_view, prompts), targets).backward()
    for (name, a), (_, b) in zip(model.named_parameters(), plain.named_parameters()):
        if a.grad is not None or b.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name


def test_fuse_leaves_other_activations_alone():
    from open_clip.transformer import QuickGELU

    mlp = torch.nn.Sequential()
    mlp.add_module("c_fc", torch.nn.Linear(4, 8))
    mlp.add_module("gelu", torch.nn.GELU())
    mlp.add_module("c_proj", torch.nn.Linear(8, 4))
    assert fuse_quick_gelu(mlp) == 0 and type(mlp) is torch.nn.Sequential
    mlp.gelu = QuickGELU()
    x = torch.randn(3, 5, 4)
    expected = mlp(x)
    assert fuse_quick_gelu(mlp) == 1
    with torch.no_grad():
        assert torch.allclose(mlp(x), expected, atol=1e-6)


def test_image_chunks_equal_one_call():
    model = make_tiny_scorer()
    crops, global_view = views_of(3, patches=4)  # 15 views
    with torch.no_grad():
        model.image_chunk = None
        whole = model.image_features(crops, global_view)
        model.image_chunk = 4  # uneven last chunk
        chunked = model.image_features(crops, global_view)
    assert torch.allclose(whole, chunked, atol=1e-6)


@pytest.mark.parametrize("caller_threads", [1, 2])
def test_text_thread_uses_its_callers_thread_count(caller_threads):
    """The text thread lives on after a command sets torch's threads in this process; it must run
    with the caller's count (OpenMP's is per thread), or bf16 sums round differently."""
    model = make_tiny_scorer()
    crops, global_view = views_of(3)
    before = torch.get_num_threads()
    try:
        with torch.no_grad():
            model.overlap_text = True
            model(crops, global_view, PROMPTS[:3])  # the text thread exists now, at `before`
            torch.set_num_threads(caller_threads)
            got = {}
            for overlap in (False, True):
                for amp in (False, True):
                    model.overlap_text = overlap
                    model.text_cache.clear()
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                        got[overlap, amp] = model(crops, global_view, PROMPTS[:3])
    finally:
        torch.set_num_threads(before)
    for amp in (False, True):
        assert torch.equal(got[True, amp], got[False, amp])


def test_text_thread_gives_the_scores_of_one_thread_under_its_callers_autocast():
    model = make_tiny_scorer()
    crops, global_view = views_of(3)
    prompts = PROMPTS[:3]
    for precision in (None, torch.bfloat16):
        amp = torch.autocast("cpu", dtype=precision) if precision else torch.autocast("cpu", enabled=False)
        got = {}
        for overlap in (False, True):
            model.overlap_text = overlap
            model.text_cache.clear()
            with torch.no_grad(), amp:
                got[overlap] = model(crops, global_view, prompts)
        # equal to the bit: the text thread ran the text tower in the caller's precision
        assert torch.equal(got[True], got[False])
        assert all(k[0] == torch.bfloat16 for k in model.text_cache) == (precision is not None)
    model.overlap_text = True
    with torch.no_grad():
        model(crops, global_view, prompts)
    seen = []
    encode_prompts = model.encode_prompts
    model.encode_prompts = lambda *a: seen.append(threading.current_thread().name) or encode_prompts(*a)
    model.text_cache.clear()
    with torch.no_grad():
        model(crops, global_view, prompts)
    assert seen and seen[0].startswith("ipce-text")
    loss = model(crops, global_view, prompts).sum()  # with gradients: one thread, and they flow to the text tower
    loss.backward()
    assert seen[-1] == threading.current_thread().name
    assert model.clip.token_embedding.weight.grad is not None


def test_views_are_chunked_on_the_cpu_only():
    """On CUDA one call is faster; a meta-device model (shapes only) stands in for a GPU one."""
    model = make_tiny_scorer()
    model.image_chunk = 4
    sizes = []
    encode = model.clip.encode_image
    model.clip.encode_image = lambda views: sizes.append(views.shape[0]) or encode(views)
    crops, global_view = views_of(3, patches=4)  # 15 views
    with torch.no_grad():
        model.image_features(crops, global_view)
        assert sizes == [4, 4, 4, 3]
        sizes.clear()
        model.to("meta")
        model.image_features(crops.to("meta"), global_view.to("meta"))
    assert sizes == [15]


def test_texts_follow_autocast_and_the_cache_keeps_precisions_apart():
    model = make_tiny_scorer()
    with torch.no_grad():
        fp32 = model.encode_prompts(PROMPTS[:3])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.text_features(PROMPTS[:3])  # text_autocast True, the default: bf16 texts
        cached = model.text_features(PROMPTS[:3])  # fp32 again: not served the bf16 entries
        model.text_autocast = False
        model.text_cache.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            kept = model.text_features(PROMPTS[:3])
    assert not torch.allclose(low, fp32, atol=1e-4)  # bf16 texts really differ
    assert torch.allclose(cached, fp32, atol=1e-6) and torch.allclose(kept, fp32, atol=1e-6)


def test_bf16_scores_stay_close_to_fp32():
    model = make_tiny_scorer()
    crops, global_view = views_of(4)
    prompts = PROMPTS[:4]
    with torch.no_grad():
        fp32 = model(crops, global_view, prompts)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(crops, global_view, prompts)
    assert low.dtype == torch.float32  # similarities and softmax in fp32
    assert 0 < (low - fp32).abs().mean() <= 0.02


def test_bf16_precision_of_the_scorer_stays_close_to_fp32():
    import ipce

    images = [random_image(240 + 40 * i, 230, seed=i) for i in range(4)]
    scores = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        scorer = ipce.load_scorer("tiny", resize=224, patches=3, precision=precision)
        scores[precision] = torch.tensor(scorer.score(images, PROMPTS[:4]))
    assert 0 < (scores["bf16"] - scores["fp32"]).abs().mean() <= 0.02


def test_normalized_tensor_matches_the_textbook_formula():
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD  # OpenAI's values, not ipce's copy

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    for mode in ("RGB", "RGBA", "L"):
        image = Image.fromarray(pixels).convert(mode)
        ours = to_normalized_tensor(image)
        rgb = np.asarray(image.convert("RGB"))  # RGB/RGBA: the pixels themselves; gray: its RGB conversion
        assert mode == "L" or np.array_equal(rgb, pixels)
        reference = (torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255
                     - torch.tensor(OPENAI_DATASET_MEAN).view(3, 1, 1)) / torch.tensor(OPENAI_DATASET_STD).view(3, 1, 1)
        assert ours.shape == (3, 37, 53) and ours.dtype == torch.float32 and ours.is_contiguous()
        assert torch.allclose(ours, reference, atol=1e-6)


@pytest.mark.slow
def test_compiled_towers_give_the_same_scores_and_keys():
    model = make_tiny_scorer()
    crops, global_view = views_of(2)
    prompts = PROMPTS[:2]
    with torch.no_grad():
        expected = model(crops, global_view, prompts)
    keys = list(model.state_dict())
    torch._dynamo.reset()
    # aot_eager: the same capture as the default inductor backend without C++ code generation
    # (seconds instead of a minute); benchmarks/run.py times the inductor build.
    speed.compile_towers(model, backend="aot_eager")
    model.text_cache.clear()
    with torch.no_grad():
        got = model(crops, global_view, prompts)
    assert torch.allclose(got, expected, atol=1e-5)
    assert list(model.state_dict()) == keys
    torch._dynamo.reset()


def numbered_parts():
    """Five 3x4 tensors holding 100 * part + 10 * row + column, and the [5, 3, 4] tensor that
    stacking them must give, written down from the same formula."""
    whole = (100 * torch.arange(5).view(5, 1, 1) + 10 * torch.arange(3).view(1, 3, 1)
             + torch.arange(4).view(1, 1, 4)).float()
    parts = [torch.tensor([[100.0 * i + 10 * r + c for c in range(4)] for r in range(3)]) for i in range(5)]
    return parts, whole


def test_channels_last_and_transfer_helpers_change_nothing():
    model = make_tiny_scorer()
    crops, global_view = views_of(2)
    with torch.no_grad():
        expected = model(crops, global_view, PROMPTS[:2])
        speed.use_channels_last(model)
        assert model.clip.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        got = model(speed.to_device(crops, "cpu"), speed.to_device(global_view, "cpu"), PROMPTS[:2])
    assert torch.allclose(got, expected, atol=1e-5)
    parts, whole = numbered_parts()
    stacked = speed.stack_pinned(parts)
    assert stacked.shape == (5, 3, 4) and torch.equal(stacked, whole)
    assert stacked.is_pinned() == torch.cuda.is_available()  # page-locked only where CUDA will receive it
    parts[0].fill_(-1)  # a copy, not a view of its parts
    assert torch.equal(stacked, whole)


def test_channels_last_turns_every_convolution_of_a_resnet_tower_and_keeps_its_scores():
    torch.manual_seed(0)
    model = CorrespondenceScorer(load_backbone("tiny-resnet")[0]).eval()
    crops, global_view = views_of(2)
    with torch.no_grad():
        expected = model(crops, global_view, PROMPTS[:2])
        speed.use_channels_last(model)
        got = model(crops, global_view, PROMPTS[:2])
    convs = [m for m in model.clip.visual.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) > 10 and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert torch.allclose(got, expected, atol=1e-4)


def test_narrow_batch_norms_run_channels_first_with_the_same_outputs_and_gradients():
    """On the CPU the narrow batch norms of a channels-last ResNet tower take their input
    channels-first (the CPU kernel is 2-3x faster so) and hand it back channels-last; training
    outputs and every gradient stay those of the plain tower."""
    torch.manual_seed(0)
    # float64: in float32 the first convolution's gradient, a sum over every pixel behind batch
    # norms, differs by ~1 % between the layouts at one thread; rounding, not the hooks
    plain = CorrespondenceScorer(load_backbone("tiny-resnet")[0]).train().double()
    fast = speed.use_channels_last(speed.use_channels_last(copy.deepcopy(plain)))  # twice: hooks once
    visual = fast.clip.visual
    narrow, wide = visual.bn1, visual.layer4[0].bn1  # 4 and 64 channels
    assert narrow.num_features <= speed.NARROW_BATCH_NORM < wide.num_features
    assert len(narrow._forward_pre_hooks) == 1 and len(narrow._forward_hooks) == 1 and not wide._forward_hooks
    seen = {}
    for name, bn in (("narrow", narrow), ("wide", wide)):
        bn.register_forward_pre_hook(lambda _, args, name=name: seen.update({name: args[0].is_contiguous()}))
    hand_over = []
    visual.conv2.register_forward_pre_hook(
        lambda _, args: hand_over.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    pictures = torch.randn(4, 3, 224, 224, dtype=torch.float64)
    outputs = []
    for model, x in ((plain, pictures), (fast, pictures.contiguous(memory_format=torch.channels_last))):
        out = model.clip.encode_image(x)
        (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()
        outputs.append(out.detach())
    assert seen == {"narrow": True, "wide": False} and hand_over == [True]
    assert torch.allclose(outputs[0], outputs[1], atol=1e-4)
    for (name, a), b in zip(plain.clip.visual.named_parameters(), visual.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-5), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pinned_stack_on_cuda():
    parts, whole = numbered_parts()
    stacked = speed.stack_pinned(parts)
    assert stacked.is_pinned() and torch.equal(stacked, whole)
    assert torch.equal(speed.to_device(stacked, "cuda").cpu(), stacked)


# ----------------------------------------------------------------------------- the flags
def test_speed_options_helper_applies_both():
    model = speed.apply_speed_options(make_tiny_scorer(), channels_last=True)
    assert model.channels_last and model.clip.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.clip.visual._compiled_call_impl is None  # compile stays off unless asked
    plain = speed.apply_speed_options(make_tiny_scorer())
    assert not plain.channels_last and plain.clip.visual._compiled_call_impl is None


@pytest.fixture
def compiled_models(monkeypatch):
    """Every model that `--compile` compiles, compiled with the aot_eager backend: the same
    graph capture as inductor without C++ code generation (seconds instead of a minute)."""
    seen = []
    original = speed.compile_towers

    def compile_towers(model, **kwargs):
        seen.append(model)
        return original(model, backend="aot_eager")

    torch._dynamo.reset()
    monkeypatch.setattr(speed, "compile_towers", compile_towers)
    yield seen
    torch._dynamo.reset()


def assert_fast_model(model):
    """The towers are compiled and the patch embedding is channels-last."""
    assert model.clip.visual._compiled_call_impl is not None
    assert model.clip.transformer._compiled_call_impl is not None
    assert model.channels_last and model.clip.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_load_scorer_compile_and_channels_last(tmp_path, compiled_models):
    import ipce

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors", seed=3)
    images = [random_image(240 + 40 * i, 230, seed=i) for i in range(3)]
    prompts = PROMPTS[:3]
    plain = ipce.load_scorer(str(ckpt), resize=224, patches=2).score(images, prompts)
    scorer = ipce.load_scorer(str(ckpt), resize=224, patches=2, compile=True, channels_last=True)
    assert [m.model for m in scorer.members] == compiled_models
    assert_fast_model(compiled_models[0])
    assert scorer.score(images, prompts) == pytest.approx(plain, abs=1e-4)


def test_score_and_predict_commands_pass_the_speed_flags(tmp_path, compiled_models):
    import csv

    from ipce.cli import main

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors", seed=3)
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = [folder / f"gen_{i}.png" for i in range(3)]
    for i, path in enumerate(paths):
        random_image(240 + 40 * i, 230, seed=i).save(path)
    common = ["--checkpoint", str(ckpt), "--resize", "224", "--patches", "2"]
    fast = ["--compile", "--channels-last"]

    def scores(csv_path):
        return [float(r["score"]) for r in csv.DictReader(open(csv_path, newline=""))]

    assert main(["score", *map(str, paths), "--prompt", "a cat", *common, "--out", str(tmp_path / "a.csv")]) == 0
    assert main(["score", *map(str, paths), "--prompt", "a cat", *common, *fast, "--out", str(tmp_path / "b.csv")]) == 0
    assert len(compiled_models) == 1
    assert_fast_model(compiled_models[0])
    assert scores(tmp_path / "b.csv") == pytest.approx(scores(tmp_path / "a.csv"), abs=1e-4)

    predict = ["predict", "--images", str(folder), "--prompt", "a cat", "--workers", "0", "--no-progress", *common]
    assert main([*predict, "--out", str(tmp_path / "c.csv")]) == 0
    assert main([*predict, *fast, "--out", str(tmp_path / "d.csv")]) == 0
    assert len(compiled_models) == 2
    assert_fast_model(compiled_models[1])
    assert scores(tmp_path / "d.csv") == pytest.approx(scores(tmp_path / "c.csv"), abs=1e-4)


@pytest.mark.slow
def test_train_applies_the_speed_flags_before_training(tmp_path, compiled_models):
    import csv
    import json

    from ipce.cli import main
    from tests.datagen import brightness_dataset, tiny_flags

    annotations, images = brightness_dataset(tmp_path / "data", n=16)
    one_step = ["--batch-size", "16"]  # one batch: fewer shapes to compile
    assert main(["train", *tiny_flags(annotations, images, tmp_path / "plain", epochs=1), *one_step]) == 0
    assert main(["train", *tiny_flags(annotations, images, tmp_path / "fast", epochs=1), *one_step,
                 "--compile", "--channels-last"]) == 0
    assert len(compiled_models) == 1  # the trained model (paper protocol: no test pass)
    assert_fast_model(compiled_models[0])
    config = json.loads((tmp_path / "fast" / "config.json").read_text())
    assert config["compile"] and config["channels_last"]

    def predictions(run):
        return [float(r["score"]) for r in csv.DictReader(open(run / "split1" / "val_predictions.csv", newline=""))]

    # one epoch of training from the same start: the same held-out scores up to float rounding
    assert predictions(tmp_path / "fast") == pytest.approx(predictions(tmp_path / "plain"), abs=1e-4)


def _cpp_compiler():
    import os
    import shutil

    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++") or shutil.which("clang++")


@pytest.mark.slow
@pytest.mark.skipif(_cpp_compiler() is None, reason="torch.compile (inductor) on a CPU needs a C++ compiler")
def test_compile_flag_with_inductor_gives_the_same_scores(tmp_path):
    """The real `--compile` (inductor, C++ code): ~30 s on a cold torch compile cache, ~3 s warm."""
    import ipce

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors", seed=3)
    images = [random_image(240, 230, seed=i) for i in range(2)]
    plain = ipce.load_scorer(str(ckpt), resize=224, patches=2).score(images, PROMPTS[:2])
    torch._dynamo.reset()
    try:
        scorer = ipce.load_scorer(str(ckpt), resize=224, patches=2, compile=True)
        assert scorer.members[0].model.clip.visual._compiled_call_impl is not None
        assert scorer.score(images, PROMPTS[:2]) == pytest.approx(plain, abs=1e-4)
    finally:
        torch._dynamo.reset()


# ----------------------------------------------------------------------------- GPU levers on the CPU
@pytest.mark.slow
def test_regional_compile_compiles_each_block_and_keeps_the_scores():
    model = make_tiny_scorer()
    crops, global_view = views_of(2)
    prompts = PROMPTS[:3:2]
    with torch.no_grad():
        expected = model(crops, global_view, prompts)
    keys = list(model.state_dict())
    torch._dynamo.reset()
    try:
        speed.compile_blocks(model, backend="aot_eager")  # the capture inductor gets, without C++ code generation
        blocks = speed.residual_blocks(model)
        assert len(blocks) == 4 and all(b._compiled_call_impl is not None for b in blocks)
        assert model.clip.visual._compiled_call_impl is None and model.clip.transformer._compiled_call_impl is None
        model.text_cache.clear()
        with torch.no_grad():
            got = model(crops, global_view, prompts)
        assert torch.allclose(got, expected, atol=1e-5)
        assert list(model.state_dict()) == keys
    finally:
        torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.skipif(_cpp_compiler() is None, reason="torch.compile (inductor) on a CPU needs a C++ compiler")
def test_regional_compile_with_inductor_and_sdpa_gives_the_same_scores(tmp_path):
    import ipce

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors", seed=3)
    images = [random_image(240, 230, seed=i) for i in range(2)]
    plain = ipce.load_scorer(str(ckpt), resize=224, patches=2).score(images, PROMPTS[:2])
    torch._dynamo.reset()
    try:
        scorer = ipce.load_scorer(str(ckpt), resize=224, patches=2, compile_regional=True, attention="sdpa")
        assert all(b._compiled_call_impl is not None for b in speed.residual_blocks(scorer.members[0].model))
        assert scorer.score(images, PROMPTS[:2]) == pytest.approx(plain, abs=1e-5)
    finally:
        torch._dynamo.reset()


def test_compile_and_regional_compile_are_one_choice():
    from ipce.errors import IpceError

    with pytest.raises(IpceError, match="--compile-regional"):
        speed.apply_speed_options(make_tiny_scorer(), compile=True, compile_regional=True)


def bf16_weight_scores(model: CorrespondenceScorer, crops, global_view, prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp32 scores, scores of the same model with bf16 image-tower weights)."""
    with torch.no_grad():
        fp32 = model(crops, global_view, prompts)
        speed.use_bf16_image_weights(model)
        return fp32, model(crops, global_view, prompts)


def test_bf16_image_weights_keep_the_texts_in_fp32_and_score_near_fp32():
    model = make_tiny_scorer()
    crops, global_view = views_of(4)
    with torch.no_grad():
        texts = model.encode_prompts(PROMPTS[:4])
    fp32, low = bf16_weight_scores(model, crops, global_view, PROMPTS[:4])
    assert model.clip.visual.conv1.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if not n.startswith("clip.visual."))
    assert low.dtype == torch.float32 and 0 < (low - fp32).abs().mean() <= 0.02
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cached = model.text_features(PROMPTS[:4])  # texts in fp32 under any autocast, from the cache
    assert cached.dtype == torch.float32 and torch.allclose(cached, texts, atol=1e-6)


@pytest.mark.slow
def test_bf16_image_weights_on_vit_b_32_report_their_distance_from_fp32(record_property):
    torch.manual_seed(0)
    clip, _, _ = load_backbone("random:ViT-B-32")
    with torch.no_grad():
        clip.logit_scale.fill_(float(np.log(100)))  # as trained CLIPs end: scores spread as in real use
    model = CorrespondenceScorer(clip).eval()
    crops, global_view = views_of(4, patches=3, size=(288, 256))
    fp32, low = bf16_weight_scores(model, crops, global_view, PROMPTS[:4])
    mad = (low - fp32).abs().mean().item()
    record_property("bf16_weights_mad_vit_b_32", mad)
    print(f"bf16 image weights, random ViT-B-32: mean abs difference from fp32 {mad:.5f} on 0..5")
    assert 0 < mad <= 0.02


@pytest.mark.slow
def test_bf16_weights_flag_is_selectable_and_named_in_predict_settings(tmp_path):
    import csv
    import json

    import ipce
    from ipce.cli import main

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors", seed=3)
    scorer = ipce.load_scorer(str(ckpt), bf16_weights=True)
    assert scorer.bf16_weights and scorer.members[0].model.clip.visual.conv1.weight.dtype == torch.bfloat16
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        random_image(240 + 40 * i, 230, seed=i).save(folder / f"gen_{i}.png")
    predict = ["predict", "--images", str(folder), "--prompt", "a cat", "--workers", "0", "--no-progress",
               "--checkpoint", str(ckpt), "--resize", "224", "--patches", "2"]
    assert main([*predict, "--out", str(tmp_path / "a.csv")]) == 0
    assert main([*predict, "--bf16-weights", "--out", str(tmp_path / "b.csv")]) == 0

    def scores(path):
        return [float(r["score"]) for r in csv.DictReader(open(path, newline=""))]
    low, fp32 = scores(tmp_path / "b.csv"), scores(tmp_path / "a.csv")
    assert low != fp32 and low == pytest.approx(fp32, abs=0.05)
    sidecar = json.loads((tmp_path / "b.csv.ipce.json").read_text())
    assert "bf16 image weights" in json.dumps(sidecar)
    # a resume without the flag would mix precisions in one file: refused
    assert main([*predict, "--resume", "--out", str(tmp_path / "b.csv")]) != 0
