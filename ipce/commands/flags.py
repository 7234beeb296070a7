"""The flags several commands share, and the one way of turning the data flags into records.

Data, one of the forms a command's parser offers:
  --preset NAME [--subset S] [--data-root DIR] [--target T]   a published dataset
  --annotations FILE --images DIR                              any CSV/XLSX with a header
  --images DIR --prompt TEXT                                   every image in a folder, one prompt (predict)
  --images DIR --prompts FILE                                  a folder and a CSV `image,prompt` (predict)
"""
from __future__ import annotations

import argparse
from typing import Sequence

from ipce.errors import IpceError
from ipce.utils.precision import PRECISIONS

# (flag, its default when the command supplies defaults, the rest of add_argument)
DATA_SOURCE_FLAGS = (
    ("--preset", None, {"metavar": "NAME", "help": "a published dataset: agiqa1k, agiqa3k, aigciqa2023 or aigcqa30k"}),
    ("--data-root", "data", {"help": "folder holding the dataset folders (default: data)"}),
    ("--subset", None, {"help": "aigcqa30k: train, val or test (default: train)"}),
    ("--target", None, {"help": "which score, e.g. quality, alignment, correspondence"}),
    ("--annotations", None, {"help": "custom CSV/XLSX with a header (instead of --preset)"}),
    ("--images", None, {"help": "folder the custom image names are relative to"}),
    ("--image-col", "image", {"help": "custom: image column (default: image)"}),
    ("--prompt-col", "prompt", {"help": "custom: prompt column (default: prompt)"}),
    ("--target-col", None, {"help": "custom: score column (default: mos, optional)"}),
    ("--duplicates", "keep", {"choices": ("keep", "first", "mean"),
                              "help": "an image listed more than once: keep every row as published (default), "
                                      "the first row, or one row with the mean score"}),
)

# The data forms the records resolver knows, by the flag that chooses each, and how each is written.
SOURCE_FORMS = {"--preset": "--preset NAME (with --data-root DIR)", "--annotations": "--annotations FILE --images DIR",
                "--prompt": "--images DIR --prompt TEXT", "--prompts": "--images DIR --prompts FILE"}


def number_list(text: str) -> list[int]:
    """'1,3,5-7' -> [1, 3, 5, 6, 7] (an argparse type: a ValueError is its one-line usage error)."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if "-" in part:
            lo, hi = part.split("-", 1)
            out += range(int(lo), int(hi) + 1)
        elif part:
            out.append(int(part))
    return out


def add_data_source_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup, defaults: bool = True,
                              leave_out: Sequence[str] = ()) -> None:
    """A published dataset (--preset, --data-root, --subset, --target) or custom annotations (--annotations,
    --images, --image-col, --prompt-col, --target-col), and the --duplicates policy.

    `defaults=False` (ipce train): every flag defaults to None, so that the preset and TrainConfig
    supply the value. `leave_out`: the flags of this group a command does not read."""
    unknown = set(leave_out) - {flag for flag, _, _ in DATA_SOURCE_FLAGS}
    if unknown:
        raise ValueError(f"add_data_source_arguments: no such flag {', '.join(sorted(unknown))}")
    for flag, default, options in DATA_SOURCE_FLAGS:
        if flag not in leave_out:
            p.add_argument(flag, default=default if defaults else None, **options)


def add_prompt_source_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--prompt TEXT / --prompts FILE: the prompts of an image folder (--images DIR)."""
    p.add_argument("--prompt", default=None, help="with --images DIR: score every image in DIR against this prompt")
    p.add_argument("--prompts", default=None, help="with --images DIR: CSV with columns image,prompt")


def add_view_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--resize S` and `--patches N` of a scoring command, over what the checkpoint says."""
    p.add_argument("--resize", type=int, default=None,
                   help="adaptive-resize size S (default: the checkpoint's, else 512)")
    p.add_argument("--patches", type=int, default=None,
                   help="evaluation crops (default: the checkpoint's, else 15)")


ATTENTIONS = ("mha", "sdpa")


def add_speed_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup, defaults: bool = True,
                        scoring: bool = False) -> None:
    """`--compile`, `--compile-regional`, `--channels-last` and `--attention` (ipce.models.speed),
    for train, predict and score; `scoring`: also `--bf16-weights` (inference only).
    `defaults=False` (default None) lets `ipce train --resume` tell a flag not given from one given."""
    default = False if defaults else None
    p.add_argument("--compile", action="store_true", default=default,
                   help="torch.compile both towers (needs a C++ compiler on a CPU)")
    p.add_argument("--compile-regional", action="store_true", default=default,
                   help="torch.compile each residual block of both towers instead (one block's warm-up per "
                        "tower; measured on the CPU only)")
    p.add_argument("--channels-last", action="store_true", default=default,
                   help="channels-last convolutions in the image tower (CUDA; on the CPU only ResNet towers gain)")
    p.add_argument("--attention", choices=ATTENTIONS,  # ipce.models.attention.ATTENTIONS, without torch default="mha" if defaults else None,
                   help="mha: nn.MultiheadAttention as open_clip has it; sdpa: one batch-first "
                        "scaled_dot_product_attention per block, the text tower's with is_causal (the same weights; "
                        "measured on the CPU only)" + ("" if defaults else " (default: mha)"))
    if scoring:
        p.add_argument("--bf16-weights", action="store_true", default=False,
                       help="the image tower's weights in bf16, the text tower in fp32 and cached (scores move by "
                            "a measured mean absolute difference from fp32; see README)")


def speed_options(args: argparse.Namespace) -> dict:
    """The speed flags a command's parser has, as `load_scorer` keywords."""
    names = ("compile", "channels_last", "attention", "compile_regional", "bf16_weights")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def add_precision_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup, defaults: bool = True) -> None:
    """`--precision fp32|bf16|fp16`: evaluation precision (default None: the checkpoint's, see
    ipce.api.load_scorer); `defaults=False` (ipce train): default None, the config's fp32."""
    if defaults:
        p.add_argument("--precision", choices=PRECISIONS, default=None,
                       help="evaluation precision (default: the one the checkpoint's metrics were computed in, "
                            "as `ipce train --precision` recorded it; fp32 for a checkpoint without one)")
    else:
        p.add_argument("--precision", choices=PRECISIONS, default=None, help="training precision (default: fp32)")


def add_runtime_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--runtime torch|onnxruntime`: what runs the model (onnxruntime: a folder of `ipce export --format onnx`)."""
    p.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch",
                   help="torch, or onnxruntime for a folder of `ipce export --format onnx` (fp32; the CPU, or "
                        "onnxruntime's CUDA provider on --device cuda where installed; needs ipce[onnx])")


# ----------------------------------------------------------------------------- records

def add_weights_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The backbone's weight file, for every command that builds a model from a backbone name."""
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="weight file of a backbone named by --checkpoint/--backbone (OpenAI .pt, open_clip "
                        ".bin/.safetensors, or a state dict); default: looked up as `ipce weights list` shows")


def annotations_from_args(args: argparse.Namespace):
    """What the data flags name, read with every bad row collected: (Annotations, description).

    The forms are those the command's parser has (SOURCE_FORMS); exactly one must be given."""
    from ipce.datasets.sources import Annotations, dataset_info, load_custom, load_dataset

    forms = [flag for flag in SOURCE_FORMS if hasattr(args, flag[2:])]
    chosen = [flag for flag in forms if getattr(args, flag[2:]) is not None]
    if len(chosen) > 1:
        raise IpceError(f"{' and '.join(chosen)}: give only one of {', '.join(forms)}")
    if not chosen:
        usages = [SOURCE_FORMS[flag] for flag in forms]
        listed = usages[0] if len(usages) == 1 else f"{', '.join(usages[:-1])} or {usages[-1]}"
        raise IpceError(f"no data given: pass {listed}")
    form = chosen[0]
    images = getattr(args, "images", None)
    duplicates = getattr(args, "duplicates", None) or "keep"
    if form == "--preset":
        if images:
            raise IpceError("--images: not used with --preset (the preset knows its folders; use --data-root DIR)")
        subset = getattr(args, "subset", None)
        root = getattr(args, "data_root", None) or "data"
        found = load_dataset(args.preset, root, subset=subset, target=getattr(args, "target", None),
                             duplicates=duplicates)
        subsets = dataset_info(args.preset).subsets
        if subset is None and subsets != ("all",):
            subset = subsets[0]  # the one read when none is given: name it
        return found, f"{args.preset}{f' ({subset})' if subset else ''} under {root}"
    if not images:
        raise IpceError(f"--images: required with {form} (the folder of the images)")
    if form == "--prompt":
        from ipce.engine.predict import folder_records

        records = folder_records(images, args.prompt)
        return Annotations(records, rows=len(records)), f"{images} (prompt {args.prompt!r})"
    table = args.annotations if form == "--annotations" else args.prompts
    target_col = getattr(args, "target_col", None)
    # a command without the --*-col flags (rank) reads the columns image,prompt by those names
    hint = "" if hasattr(args, "image_col") else f"name the columns of {form} image and prompt"
    found = load_custom(table, images, image_col=getattr(args, "image_col", None) or "image",
                        prompt_col=getattr(args, "prompt_col", None) or "prompt", target_col=target_col or "mos",
                        require_target=target_col is not None, duplicates=duplicates, hint=hint)
    return found, f"{table} (images in {images})"


def records_from_args(args: argparse.Namespace):
    """The usable records of `annotations_from_args` (a bad row raises `DataError`): (records, description)."""
    found, source = annotations_from_args(args)
    return found.usable(), source


# ----------------------------------------------------------------------------- one grammar
# The flags that mean the same thing in several subcommands are defined here once: the same
# name, default and help wherever they appear.

# Exit statuses of every subcommand (also the epilog of `ipce --help`).
EXIT_OK = 0        # success
EXIT_ERROR = 1     # a user error, one line on stderr (`ipce: error: ...`), or data a check found unusable
EXIT_USAGE = 2     # a usage error found by argparse: unknown flag, missing or malformed value
EXIT_PARTIAL = 3   # finished with partial results: the images that could be read were scored, the others named
EXIT_CODES = ((EXIT_OK, "success"),
              (EXIT_ERROR, "error: a bad value, a missing file, an unknown preset (one line on stderr), data "
                           "that check-data / splits --from found unusable, or no image that could be read"),
              (EXIT_USAGE, "usage error: unknown flag, missing or malformed value (argparse)"),
              (EXIT_PARTIAL, "partial results: score, predict, rank and explain scored the images they could read "
                             "and named each of the others with its problem"))


def exit_codes_epilog() -> str:
    return "exit status:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES)


def partial_exit(total: int, failed: list[str], where: str = "") -> int:
    """The one policy for unreadable images among good ones: EXIT_OK when none failed, EXIT_PARTIAL
    when some did (the rest were scored; each was named), an IpceError when every one did.
    `failed`: each bad image's problem; `where`: where they are listed (e.g. ", listed in x.csv")."""
    if not failed:
        return EXIT_OK
    if len(failed) == total:
        first = failed[0] if total == 1 else f"first: {failed[0]}"
        raise IpceError(f"none of the {total} image(s) could be read{where}; {first}")
    return EXIT_PARTIAL


CHECKPOINT_TERMS = ("an ipce checkpoint, an original checkpoint (a file saved by the original authors' training "
                    "scripts, torch.save({'model_state_dict': ...})), a backbone name (ViT-B-32, tiny, "
                    "random:ViT-B-32, ...), or the CLIPScore baseline clipscore:NAME (100 * max(cos, 0) of CLIP NAME's "
                    "image and prompt embeddings, on 0..100)")
DEVICE_HELP = "auto (cuda when available, else cpu), cpu, cuda or cuda:N"
WORKERS_HELP = ("parallel image decoders, 0 for none (processes when loading batches; threads when checking "
                "images, which measured faster there)")
WORKERS_DEFAULT = "2, 1 where two or three cores are usable, 0 on one (ipce.utils.threads.split_cores)"
PROGRESS_HELP = "no progress bars"
GROUP_BY_CHOICES = ("prompt", "generator")
GROUP_BY_HELP = ("keep all records with the same prompt (or generator) on one side of every split (default: none, "
                 "records are split one by one)")


class HelpFormatter(argparse.HelpFormatter):
    """Help with '(default: X)' after every flag that has a default worth showing (not None, not
    False, not a help text that names its default itself); descriptions and epilogs keep their line
    breaks and indents, each line wrapped to the terminal."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        lines = []
        for line in text.splitlines():
            depth = len(line) - len(line.lstrip())
            hang = len(line) - len(line.lstrip().split(None, 1)[-1].lstrip()) if depth else 0  # a table row
            lines.append(textwrap.fill(line.strip(), width, initial_indent=indent + " " * depth,
                                       subsequent_indent=indent + " " * hang) if line.strip() else "")
        return "\n".join(lines)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.option_strings and action.default not in (None, False, argparse.SUPPRESS, [], ())
        if shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


def add_device_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup, defaults: bool = True) -> None:
    """`--device auto|cpu|cuda|cuda:N` (ipce.utils.device.resolve_device); `defaults=False` (ipce
    train): default None, the config's auto, so that `--resume` keeps the saved device."""
    p.add_argument("--device", default="auto" if defaults else None, metavar="DEVICE",
                   help=DEVICE_HELP if defaults else f"{DEVICE_HELP} (default: auto)")


def add_workers_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup, defaults: bool = True) -> None:
    """`--workers N`, the one meaning everywhere (WORKERS_HELP); None when not given: the split of
    the usable cores (WORKERS_DEFAULT), or with `defaults=False` (ipce train --resume) the saved value."""
    p.add_argument("--workers", type=int, default=None, metavar="N", help=f"{WORKERS_HELP} (default: {WORKERS_DEFAULT})")


THREADS_HELP = ("torch threads for the model on the CPU (default: the cores this process may use, from its "
                "affinity, less the loader's workers; OMP_NUM_THREADS when set). On a machine shared with other "
                "jobs give your share, e.g. --threads 1")


def add_threads_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup, workers: bool = False,
                         threads: bool = True) -> None:
    """`--threads N` (THREADS_HELP; unless `threads` is False); with `workers`, also `--workers N`."""
    if threads:
        p.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)
    if workers:
        add_workers_argument(p)


def check_prompt_and_checkpoints(args: argparse.Namespace) -> None:
    """Refuse, before anything heavy is imported, an empty --prompt (as the JSON API does) and a
    --checkpoint that names a file (a path or a file suffix) that does not exist."""
    from pathlib import Path

    prompt = getattr(args, "prompt", None)
    if prompt is not None and not prompt.strip():
        raise IpceError("--prompt: empty; give the prompt the images were generated from (a prompt-free "
                        "checkpoint needs no --prompt)")
    given = getattr(args, "checkpoint", None)
    for checkpoint in [given] if isinstance(given, str) else given or []:
        path = Path(checkpoint)
        if not path.exists() and (path.suffix or "/" in checkpoint or "\\" in checkpoint):
            raise IpceError(f"{checkpoint}: no such checkpoint; check --checkpoint")


def use_cores(args: argparse.Namespace) -> int:
    """Check --threads/--workers, set torch's threads and return the loader's workers: each as
    given, else split from the cores this process may use (ipce.utils.threads)."""
    from ipce.utils.threads import set_torch_threads, split_cores

    threads, workers = getattr(args, "threads", None), getattr(args, "workers", None)
    if threads is not None and threads < 1:
        raise IpceError(f"--threads {threads}: must be at least 1")
    if workers is not None and workers < 0:
        raise IpceError(f"--workers {workers}: must be 0 or more")
    workers = split_cores(threads, workers)[1]
    set_torch_threads(threads, workers)
    return workers


def add_progress_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup, defaults: bool = True) -> None:
    """`--no-progress`, for every command that shows a bar; `defaults=False` (ipce train): None when not given."""
    p.add_argument("--no-progress", action="store_true", default=False if defaults else None, help=PROGRESS_HELP)


def add_group_by_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--group-by", choices=GROUP_BY_CHOICES, default=None, help=GROUP_BY_HELP)


def add_n_splits_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup, defaults: bool = True) -> None:
    """`--n-splits N`."""
    p.add_argument("--n-splits", type=int, default=10 if defaults else None, metavar="N",
                   help="number of random splits" + ("" if defaults else " (default: 10)"))


COMBINE_HELP = "ensemble rule: mean, or product (q1*q2/5, the NTIRE 2024 final entry) (default: mean)"


def add_combine_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--combine mean|product`: how an ensemble's scores are combined (ipce.api.combine_scores)."""
    p.add_argument("--combine", choices=("mean", "product"), default="mean", help=COMBINE_HELP)


PROMPT_PREFIX_HELP = ("text seen by a model: the prompt (none) or '{generator} {prompt}' (generator, the file name "
                      "up to its first '_'); once for all checkpoints or once per checkpoint, in order (default: "
                      "what each checkpoint says)")


def add_model_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup, progress: bool = True) -> None:
    """The model flags of every command that builds a scorer (`scorer_from_args`): --checkpoint
    (repeat to ensemble), --weights, --resize, --patches, --combine, --prompt-prefix, --device,
    --precision, the speed flags (--compile, --compile-regional, --channels-last, --attention,
    --bf16-weights), --threads, --runtime and, for a command that shows a bar (`progress`), --no-progress."""
    p.add_argument("--checkpoint", action="append", required=True, metavar="CKPT",
                   help=f"{CHECKPOINT_TERMS}; repeat to ensemble. Scores come on the scale the models were "
                        "trained on (0..5, or their --mos-range)")
    add_weights_argument(p)
    add_view_arguments(p)
    add_combine_argument(p)
    p.add_argument("--prompt-prefix", action="append", choices=("none", "generator"), default=None,
                   help=PROMPT_PREFIX_HELP)
    add_device_argument(p)
    add_precision_argument(p)
    add_speed_arguments(p, scoring=True)
    add_threads_argument(p)
    add_runtime_argument(p)
    if progress:
        add_progress_argument(p)


def prompt_prefixes(args: argparse.Namespace):
    """--prompt-prefix as load_scorer takes it: None (each checkpoint's), one for all, or one per checkpoint."""
    prefixes = args.prompt_prefix
    if not prefixes:
        return None
    if len(prefixes) == 1:
        return prefixes[0]
    if len(prefixes) != len(args.checkpoint):
        raise IpceError(f"--prompt-prefix: got {len(prefixes)} values for {len(args.checkpoint)} checkpoints; "
                        "give one for all or one per --checkpoint")
    return prefixes


def scorer_options(args: argparse.Namespace, batch_size: int | None = None) -> dict:
    """load_scorer's keywords but the device for the model flags (`add_model_arguments`): what
    `scorer_from_args` loads, and what a worker process given them loads (predict --engine ray)."""
    return dict(checkpoint=list(args.checkpoint), resize=args.resize, patches=args.patches, combine=args.combine,
                prompt_prefix=prompt_prefixes(args), precision=args.precision,
                batch_size=batch_size or getattr(args, "batch_size", None) or 16, weights=args.weights,
                runtime=args.runtime, **speed_options(args))


def scorer_from_args(args: argparse.Namespace, device=None, batch_size: int | None = None):
    """The scorer the model flags (`add_model_arguments`) describe; `device`: one already resolved
    (predict under torchrun), else --device; `batch_size`: else --batch-size, else 16."""
    from ipce.api import load_scorer

    return load_scorer(device=str(device) if device is not None else resolve_device(args.device),
                       **scorer_options(args, batch_size))


def train_overrides(args: argparse.Namespace) -> dict:
    """{field: value} for every TrainConfig field that is a flag of `args` (None: not given), for the
    commands that train (train, reproduce); the preset is read apart, as the recipe the others override."""
    import dataclasses

    from ipce.config import TrainConfig

    found = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if f.name != "preset" and hasattr(args, f.name)}
    if hasattr(args, "no_progress"):
        found["progress"] = False if args.no_progress else None  # --no-progress: the config's `progress`
    return found


def resolve_device(device: str | None) -> str:
    """ipce.utils.device.resolve_device: auto -> cuda when available, else cpu."""
    from ipce.utils.device import resolve_device as resolve

    return resolve(device)


# ----------------------------------------------------------------------------- preferences

def add_preference_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--preferences FILE` (human choices, with --images DIR) and the pair table's column names."""
    p.add_argument("--preferences", default=None, metavar="FILE",
                   help="human choices among images of one prompt (with --images DIR): ImageRewardDB's JSON "
                        "(prompt, generations, ranking) or a CSV of pairs (caption, image_0, image_1, label_0: 1 the "
                        "first preferred, 0 the second, 0.5 a tie)")
    p.add_argument("--preference-form", choices=("auto", "imagereward", "pairs"), default="auto",
                   help="the form of --preferences: auto (.json: imagereward, else pairs)")
    p.add_argument("--caption-col", default=None, help="pairs: prompt column (default: caption)")
    p.add_argument("--image0-col", default=None, help="pairs: first image column (default: image_0, else jpg_0)")
    p.add_argument("--image1-col", default=None, help="pairs: second image column (default: image_1, else jpg_1)")
    p.add_argument("--label-col", default=None, help="pairs: label column (default: label_0)")


def preferences_from_args(args: argparse.Namespace):
    """The preference file the flags name, every entry checked: (Preferences, description)."""
    from ipce.datasets.preferences import PairColumns, load_preferences

    images = getattr(args, "images", None)
    if not images:
        raise IpceError("--images: required with --preferences (the folder the image names are relative to)")
    columns = PairColumns(caption=getattr(args, "caption_col", None), image_0=getattr(args, "image0_col", None),
                          image_1=getattr(args, "image1_col", None), label=getattr(args, "label_col", None))
    found = load_preferences(args.preferences, images, getattr(args, "preference_form", None) or "auto", columns)
    return found, f"{args.preferences} (images in {images})"
