"""The Python API: `ipce.load_scorer(...)` and the `Scorer` it returns."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from PIL import Image

from ipce.datasets.sources import generator_of, prefixed_prompt
from ipce.models.views import ViewConfig, make_views
from ipce.errors import IpceError, ParameterError
from ipce.models.correspondence import CorrespondenceScorer, score_from_probs
from ipce.models.explain import quality_map
from ipce.models.reward import RewardFn, view_scores
from ipce.models.scale import ScoreScale, scale_of
from ipce.utils.maps import QualityMap
from ipce.utils.precision import autocast

log = logging.getLogger(__name__)

COMBINES = ("mean", "product")
RUNTIMES = ("torch", "onnxruntime")  # onnxruntime: a folder of `ipce export --format onnx` (the onnx extra)
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def combine_scores(per_model: torch.Tensor, how: str) -> torch.Tensor:
    """Ensemble [M, B] -> [B]: 'mean', or 'product' (q1*q2/5 for two models, scores stay on 0..5)."""
    if how == "mean":
        return per_model.mean(0)
    if how == "product":
        return per_model.prod(0) / 5 ** (per_model.shape[0] - 1)
    raise ParameterError("{combine} must be one of {choices}, not {how!r}", choices=", ".join(COMBINES), how=how)


@dataclass
class Member:
    """One model of a scorer, with its view settings and text prefix."""
    model: CorrespondenceScorer
    meta: dict
    views: ViewConfig
    prompt_prefix: str | None = None
    runtime: str = "torch"

    @property
    def scale(self) -> ScoreScale:
        """The scale this model answers on: its checkpoint's `mos_range` (without one, 0..5)."""
        return scale_of(self.meta.get("mos_range"))


class Scorer:
    """Scores images against prompts with one model or an ensemble, on the scale the models were
    trained on (`scale`; 0..5 unless trained with --mos-range)."""

    def __init__(self, members: list[Member], combine: str = "mean", device: str | torch.device = "cpu",
                 precision: str = "fp32", batch_size: int = 16, bf16_weights: bool = False):
        if combine not in COMBINES:
            raise ParameterError("{combine} must be one of {choices}, not {how!r}", choices=", ".join(COMBINES),
                                 how=combine)
        scales = {m.scale for m in members}
        if len(scales) > 1:  # combine is defined on the model's 0..5, but there is no one scale to answer on
            listed = ", ".join(f"model {i + 1} on {m.scale}" for i, m in enumerate(members))
            raise IpceError(f"the ensemble's models were trained on different score scales ({listed}); "
                            "ensemble only models of one --mos-range")
        self.members = members
        self.combine = combine
        self.device = torch.device(device)
        self.precision = precision
        self.batch_size = batch_size
        self.bf16_weights = bf16_weights  # the members' image towers hold bf16 weights (speed.use_bf16_image_weights)

    @property
    def scale(self) -> tuple[float, float]:
        """(lo, hi) of the scores this scorer returns."""
        return self.members[0].scale.range

    @property
    def meaning(self) -> str:
        """What the number means, from what the models were trained on (their checkpoints' `trained_on`)."""
        return "; ".join(dict.fromkeys(_meaning(m) for m in self.members))

    @property
    def view_configs(self) -> list[ViewConfig]:
        return list(dict.fromkeys(m.views for m in self.members))

    @property
    def needs_prompt(self) -> bool:
        """False when every model is prompt-free (trained with a template without `{prompt}`)."""
        return any(m.model.needs_prompt for m in self.members)

    def forget_texts(self) -> None:
        """Drop every model's cached text features: what follows encodes its prompts afresh, in its own
        batches (a block of a sharded or multi-process run gives the same numbers whoever scores it)."""
        for member in self.members:
            member.model.text_cache.clear()

    def check_prompt(self, prompt: str | None) -> None:
        """Raise the one-line ParameterError of a prompt-aware scorer given no prompt, before any work."""
        self.prompts_for(prompt, 1)

    def prompts_for(self, prompts: Sequence[str] | str | None, count: int) -> list[str]:
        """One prompt per image: `prompts` as given (one for all, or one each); None only for a
        prompt-free scorer (then every text is the template's own)."""
        if prompts is None:
            if self.needs_prompt:
                template = next(m.model.template for m in self.members if m.model.needs_prompt)
                raise ParameterError("this checkpoint needs a prompt (its texts are {text!r}): pass {prompt}; only a "
                                     "model trained with a --template without {{prompt}} scores without one",
                                     text=template)
            prompts = ""
        if isinstance(prompts, str):
            return [prompts] * count
        prompts = list(prompts)
        if len(prompts) != count:
            raise IpceError(f"got {count} images but {len(prompts)} prompts: give one prompt or one per image")
        return prompts

    def _each_member(self, prompts: Sequence[str], generators: Sequence[str | None] | None, run) -> torch.Tensor:
        """[M, B] on the models' 0..5: `run(member, texts)` for every member under the scorer's autocast,
        with each member's texts (its prompt prefix applied to `prompts`)."""
        generators = generators or [None] * len(prompts)
        rows = []
        for member in self.members:
            texts = [prefixed_prompt(p, member.prompt_prefix, g) for p, g in zip(prompts, generators)]
            with autocast(self.device, self.precision):
                rows.append(run(member, texts).float())
        return torch.stack(rows)

    def _on_scale(self, per_model: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(combined [B], per-model [M, B]) on the scorer's scale from per-model scores on 0..5: combined
        on the model's 0..5 (the product rule q1*q2/5 is defined there), then mapped."""
        scale = self.members[0].scale  # every member's (checked in __init__)
        return scale.to_data(combine_scores(per_model, self.combine)), scale.to_data(per_model)

    @torch.no_grad()
    def score_views(self, views: dict[ViewConfig, tuple[torch.Tensor, torch.Tensor]], prompts: Sequence[str],
                    generators: Sequence[str | None] | None = None, levels: bool = False):
        """(combined [B], per-model [M, B]) for prepared views (one (crops, global) per view config),
        on the scorer's scale; with `levels`, also each model's level probabilities [M, B, K] (whose
        expected levels are the per-model scores on 0..5)."""
        def run(member, texts):
            crops, global_view = views[member.views]
            model = member.model.probs if levels else member.model
            return model(crops.to(self.device, non_blocking=True), global_view.to(self.device, non_blocking=True),
                         texts).cpu()
        if not levels:
            return self._on_scale(self._each_member(prompts, generators, run))
        flat = [m for m in self.members if not hasattr(m.model, "probs") or len(getattr(m.model, "levels", ())) < 2]
        if flat:
            raise ParameterError("{levels}: a {model} scores without levels (no level probabilities); leave out "
                                 "{levels}", model=type(flat[0].model).__name__)
        probs = self._each_member(prompts, generators, run)
        return (*self._on_scale(score_from_probs(probs)), probs)

    def score(self, images: Sequence[str | Path | Image.Image] | str | Path | Image.Image,
              prompts: Sequence[str] | str | None = None, generators: Sequence[str | None] | None = None,
              progress: bool = False) -> list[float]:
        """Scores on `self.scale` (0..5 unless trained with --mos-range) for images (paths or PIL
        images) and one prompt or one per image (none for a prompt-free model). `progress`: a bar over
        the images."""
        return self.score_detailed(images, prompts, generators, progress)[0]

    def score_detailed(self, images, prompts=None, generators=None,
                       progress: bool = False) -> tuple[list[float], list[list[float]]]:
        """(combined scores, per-model scores [M][N])."""
        from ipce.datasets.images import open_rgb
        from ipce.utils.progress import progress_bar

        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        images = list(images)
        prompts = self.prompts_for(prompts, len(images))
        if generators is None:
            generators = [None if isinstance(im, Image.Image) else generator_of(str(im)) for im in images]
        combined, per_model = [], [[] for _ in self.members]
        bar = progress_bar(total=len(images), desc="score", unit="img", enabled=progress, leave=False)
        for start in range(0, len(images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            pil = [im.convert("RGB") if isinstance(im, Image.Image) else open_rgb(im) for im in images[chunk]]
            views = {cfg: _stack([make_views(im, cfg) for im in pil]) for cfg in self.view_configs}
            scores, each = self.score_views(views, prompts[chunk], generators[chunk])
            combined += scores.tolist()
            for i, row in enumerate(each.tolist()):
                per_model[i] += row
            bar.update(len(pil))
        bar.close()
        return combined, per_model


    def rank(self, images: Sequence[str | Path | Image.Image], prompt: str | None = None,
             generators: Sequence[str | None] | None = None) -> list["Ranked"]:
        """The images ordered best first, each with its score and its place in `images` (ties keep
        the given order), for best-of-N selection among candidates of one prompt. `generators` as
        in `score` (for a '{generator} {prompt}' model given PIL images)."""
        images = list(images)
        scores = self.score(images, prompt, generators)
        order = sorted(range(len(images)), key=lambda i: -scores[i])  # sorted() is stable: ties keep input order
        return [Ranked(image=images[i], score=scores[i], index=i, rank=r + 1) for r, i in enumerate(order)]

    @torch.no_grad()
    def explain(self, image: str | Path | Image.Image, prompt: str | None = None, stride: int | None = None,
                progress: bool = False, generator: str | None = None) -> QualityMap:
        """The quality map of one image: every 224x224 crop of the resized image at `stride` (default
        the method's own, 32 or 48 px) scored from its own level distribution, the global view's
        score and the final score (that of `score`), on `self.scale`; boxes in the original image's
        pixels. `progress`: a bar over the crops (encoded in batches of `batch_size`). `generator`: for
        a '{generator} {prompt}' model given a PIL image (a path gives it by its file name)."""
        from ipce.datasets.images import open_rgb

        self._torch_only("a quality map (explain)")
        if any(m.views.mode != "ipce" for m in self.members):
            raise IpceError("a quality map needs ipce's crops: CLIPScore (clipscore:...) scores one centre view, "
                            "so it has no map; explain with an ipce checkpoint")
        resizes = {m.views.resize for m in self.members}
        if len(resizes) > 1:
            raise IpceError(f"the ensemble's models resize differently ({', '.join(map(str, sorted(resizes)))}): "
                            "a quality map needs one grid; give --resize")
        pil = image.convert("RGB") if isinstance(image, Image.Image) else open_rgb(image)
        if generator is None and not isinstance(image, Image.Image):
            generator = generator_of(str(image))
        prompt = self.prompts_for(prompt, 1)[0]
        texts = [prefixed_prompt(prompt, m.prompt_prefix, generator) for m in self.members]
        with autocast(self.device, self.precision):
            qmap = quality_map(pil, [m.model for m in self.members], [m.views for m in self.members], texts,
                               stride=stride, device=self.device, batch_size=self.batch_size, progress=progress)
        def combined(per_model: torch.Tensor) -> list[float]:  # [M, N] on 0..5 -> N on the scorer's scale
            return self._on_scale(per_model)[0].tolist()
        return QualityMap(image_size=pil.size, boxes=qmap.boxes, scores=combined(qmap.crop_scores),
                          global_score=combined(qmap.global_scores[:, None])[0],
                          score=combined(qmap.final_scores[:, None])[0], scale=self.scale, stride=qmap.stride,
                          prompt=prompt)

    def reward(self, pixels: torch.Tensor, prompts: Sequence[str] | str | None = None,
               generators: Sequence[str | None] | None = None) -> torch.Tensor:
        """Scores [B] on `self.scale` of float pixels [B, 3, H, W] in 0..1 (any size, any device), with
        gradients to the pixels and to the models: the evaluation views are made with tensor ops
        (ipce.models.views.tensor_views). Not under no_grad; the result is on the pixels' device.
        `generators`: for a model trained with --prompt-prefix generator, each image's generator."""
        return self.reward_detailed(pixels, prompts, generators)[0]

    def reward_detailed(self, pixels: torch.Tensor, prompts=None, generators=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(combined [B], per-model [M, B]) rewards, with gradients (see `reward`)."""
        self._torch_only("the reward")
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise IpceError(f"reward: pixels of shape {tuple(pixels.shape)}; expected a float tensor [B, 3, H, W]")
        prompts = self.prompts_for(prompts, pixels.shape[0])
        per_model = self._each_member(
            prompts, generators, lambda member, texts: view_scores(member.model, pixels.to(self.device), member.views,
                                                                   texts))
        combined, per_model = self._on_scale(per_model)
        return combined.to(pixels.device), per_model.to(pixels.device)

    def _torch_only(self, what: str) -> None:
        if any(m.runtime != "torch" for m in self.members):
            raise IpceError(f"{what} needs the PyTorch runtime; load the checkpoint (or a folder of `ipce export "
                            "--format safetensors`) without --runtime onnxruntime")

    def reward_fn(self) -> "RewardFn":
        """The reward as RL fine-tuning code for diffusion models takes it: a callable
        `(images, prompts, metadata) -> (rewards [B], metadata)` accepting uint8 (0..255) or float
        (0..1) images, NCHW or NHWC, torch tensors or numpy arrays."""
        return RewardFn(self)


@dataclass(frozen=True)
class Ranked:
    """One image of a ranking: the image as given, its score, its index in the input, its rank (1 = best)."""
    image: str | Path | Image.Image
    score: float
    index: int
    rank: int


def _meaning(member: Member) -> str:
    if member.meta.get("scorer") == "clipscore":
        return "CLIPScore: 100 x the cosine of CLIP's image and prompt embeddings (0 when negative)"
    trained = member.meta.get("trained_on") or {}
    if trained.get("preferences") and not trained.get("mos"):
        return ("a preference model's score: it orders images of one prompt (higher = preferred by people); "
                "it is not a MOS, and scores of different prompts are not comparable")
    both = ", also trained on human preferences" if trained.get("preferences") else ""
    return f"a predicted mean opinion score on {member.scale}{both}"


def _stack(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    crops, global_views = zip(*pairs)
    return torch.stack(crops), torch.stack(global_views)


def load_member(checkpoint: str | Path, device: str | torch.device = "cpu", resize: int | None = None,
                patches: int | None = None, prompt_prefix: str | None = None, weights: str | None = None,
                runtime: str = "torch") -> Member:
    """One model from a checkpoint file, a model folder (`ipce export`), a backbone name ('tiny',
    'random:ViT-B-32', 'ViT-B-32') or the CLIPScore baseline ('clipscore:ViT-B-32': 100 * max(cos, 0),
    ipce.models.clipscore; its views are CLIP's own, so `resize`, `patches` and `prompt_prefix` do not
    apply); `runtime='onnxruntime'`: from a folder of ONNX graphs."""
    from ipce.models.backbone import load_backbone
    from ipce.models.checkpoint import ORIGINAL_DEFAULTS, load_checkpoint

    from ipce.models import clipscore

    path = Path(checkpoint)
    if runtime not in RUNTIMES:
        raise ParameterError("{runtime:=}{value}: use one of {choices}", value=runtime, choices=", ".join(RUNTIMES))
    if clipscore.is_clipscore(checkpoint) and not path.exists():  # the baseline: CLIP's cosine, 0..100
        if runtime != "torch":
            raise ParameterError("{path}: the CLIPScore baseline runs with {runtime:=}torch only", path=checkpoint)
        name = clipscore.backbone_of(str(checkpoint))
        clip, config, _ = load_backbone(name, weights)
        model = clipscore.ClipScoreModel(clip).to(device).eval()
        meta = {"backbone": name, "model_config": config, "scorer": "clipscore", "mos_range": list(clipscore.RANGE)}
        return Member(model, meta, ViewConfig(mode="clip"), None)
    if runtime == "onnxruntime":
        from ipce.models.onnx import load_onnx

        model, meta = load_onnx(path, device)
    elif path.is_file() or path.is_dir() or path.suffix in CHECKPOINT_SUFFIXES or "/" in str(checkpoint):
        model, meta = load_checkpoint(path, device)
    else:  # a backbone name: zero-shot CLIP, or random weights for 'tiny' / 'random:NAME'
        clip, config, _ = load_backbone(str(checkpoint), weights)
        model = CorrespondenceScorer(clip).to(device).eval()
        meta = {"backbone": str(checkpoint), "model_config": config}
    def chosen(given, key):  # an explicit 0 is the caller's choice (and an error), not "use the default"
        return given if given is not None else meta.get(key) or ORIGINAL_DEFAULTS[key]

    views = ViewConfig(resize=chosen(resize, "resize"), patches=chosen(patches, "patches"))
    if prompt_prefix is None:
        prompt_prefix = meta.get("prompt_prefix")
    return Member(model, meta, views, None if prompt_prefix == "none" else prompt_prefix, runtime)


def load_scorer(checkpoint: str | Path | Sequence[str | Path], device: str = "cpu", resize: int | None = None,
                patches: int | None = None, combine: str = "mean",
                prompt_prefix: str | None | Sequence[str | None] = None, precision: str | None = None,
                batch_size: int = 16, compile: bool = False, channels_last: bool = False,
                weights: str | Path | None = None, runtime: str = "torch", attention: str = "mha",
                compile_regional: bool = False, bf16_weights: bool = False) -> Scorer:
    """A scorer from one checkpoint or several (an ensemble). A checkpoint is a file, a model folder
    written by `ipce export` or a backbone name.

    `weights` is the weight file of a backbone named as the checkpoint (zero-shot, e.g.
    `load_scorer("ViT-B-32", weights="ViT-B-32.pt")`); without it the file is looked up
    (`ipce weights list`).
    `resize`/`patches` override what the checkpoints say (files without metadata: 512, 15).
    `prompt_prefix` ('generator' or None), one for all or one per checkpoint, overrides the
    checkpoint's. `precision` (fp32, bf16, fp16): None scores in the precision the checkpoints'
    metrics were computed in (their `precision`; fp32 when they record none); one that differs
    from it is used, with a warning. `combine` is 'mean' or 'product' (q1*q2/5, the NTIRE 2024 final entry).
    `compile` (torch.compile of both towers), `compile_regional` (of each residual block),
    `channels_last` and `attention` ('mha' or 'sdpa'): ipce.models.speed; none changes a score
    beyond float rounding. `bf16_weights`: the image towers' weights in bf16, texts in fp32
    (a measured difference from fp32, README).
    `runtime='onnxruntime'` scores folders of `ipce export --format onnx` with onnxruntime (the onnx
    extra; fp32, the CPU or onnxruntime's CUDA provider where installed); equal to PyTorch within 1e-4.
    """
    from ipce.models.speed import apply_speed_options

    checkpoints = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    if not checkpoints:
        raise ParameterError("give at least one {checkpoint}")
    prefixes = list(prompt_prefix) if isinstance(prompt_prefix, (list, tuple)) else [prompt_prefix] * len(checkpoints)
    if len(prefixes) != len(checkpoints):
        raise ParameterError("got {n} checkpoints but {m} {prompt_prefix} values", n=len(checkpoints), m=len(prefixes))
    from ipce.utils.device import resolve_device

    device = resolve_device(device)  # auto: cuda when available, else cpu
    if runtime == "onnxruntime" and precision not in (None, "fp32"):
        raise ParameterError("{precision:=}{value}: the onnxruntime runtime scores in fp32; drop {precision}",
                             value=precision)
    if runtime == "onnxruntime" and bf16_weights:
        raise ParameterError("{bf16_weights}: the onnxruntime runtime scores in fp32; drop {bf16_weights}")
    members = [load_member(c, device, resize, patches, p, weights, runtime) for c, p in zip(checkpoints, prefixes)]
    for member in members if runtime == "torch" else ():
        apply_speed_options(member.model, compile=compile, channels_last=channels_last, attention=attention,
                            compile_regional=compile_regional, bf16_weights=bf16_weights)
    precision = scoring_precision(members, precision if runtime == "torch" else "fp32")
    return Scorer(members, combine=combine, device=device, precision=precision, batch_size=batch_size,
                  bf16_weights=bf16_weights)


def scoring_precision(members: Sequence[Member], requested: str | None) -> str:
    """`requested`, or (None) the precision the members' metrics were computed in; a warning when
    the two differ, since scores then differ from the checkpoint's reported ones in the 3rd digit."""
    recorded = {m.meta.get("precision") for m in members} - {None}
    if requested is None:
        if len(recorded) > 1:
            log.warning("the checkpoints were evaluated in %s: scoring in fp32 (pass --precision to choose)",
                        " and ".join(sorted(recorded)))
            return "fp32"
        return recorded.pop() if recorded else "fp32"
    if recorded and recorded != {requested}:
        log.warning("scoring in %s; the checkpoint's metrics were computed in %s, so scores differ slightly "
                    "from them (--precision %s reproduces them)", requested, " and ".join(sorted(recorded)),
                    " / ".join(sorted(recorded)))
    return requested
