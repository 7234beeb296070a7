"""The `ipce` command. Each subcommand's parser is built from ipce.commands.flags and its own flags;
its command (ipce.commands.<name>) is imported only when it runs, so that `ipce --help` stays quick."""
from __future__ import annotations

import argparse
import logging
import sys
from importlib import import_module

from ipce.commands.flags import (EXIT_ERROR, EXIT_OK, HelpFormatter, add_data_source_arguments, add_device_argument,
                                 add_group_by_argument, add_model_arguments, add_n_splits_argument,
                                 add_preference_arguments, add_progress_argument, add_threads_argument,
                                 add_workers_argument,
                                 exit_codes_epilog)
from ipce.errors import IpceError, ParameterError
from ipce.presets.registry import SPLIT_SEED


def _command(module: str, name: str):
    """The function `name` of ipce.commands.<module>, imported when the subcommand runs."""
    def run(args: argparse.Namespace) -> int:
        return getattr(import_module(f"ipce.commands.{module}"), name)(args)
    return run


def _subparser(sub: argparse._SubParsersAction, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    """A subcommand's parser: its line in `ipce --help` (summary), its own description, the shared help format."""
    return sub.add_parser(name, help=summary, description=description, formatter_class=HelpFormatter)


def _add_module_command(sub: argparse._SubParsersAction, name: str, summary: str,
                        description: str) -> argparse.ArgumentParser:
    """A subcommand whose flags come from ipce.commands.<module>.add_<module>_arguments and whose run
    is <module>_command (module: the name with '_' for '-')."""
    module = name.replace("-", "_")
    p = _subparser(sub, name, summary, description)
    getattr(import_module(f"ipce.commands.{module}"), f"add_{module}_arguments")(p)
    p.set_defaults(run=_command(module, f"{module}_command"))
    return p


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = _subparser(sub, "score", "score images against a prompt with a checkpoint",
                   "Score image files against one prompt with a checkpoint or an ensemble: a table on the terminal, "
                   "optionally a CSV.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--prompt", default=None,
                   help="the prompt the images were generated from (not needed by a prompt-free checkpoint)")
    add_model_arguments(p)
    p.add_argument("--batch-size", type=int, default=16, help="images per batch")
    p.add_argument("--out", default=None, help="write image,prompt,score to this CSV")
    p.set_defaults(run=_command("score", "score_command"))


def _add_check_data(sub: argparse._SubParsersAction) -> None:
    p = _subparser(sub, "check-data", "decode every image of a dataset and report problems",
                   "Read a dataset's annotations (or a preference file: --preferences), decode every image and "
                   "report every problem in one run: bad rows, bad images, duplicates (warnings). Exit 1 when any "
                   "record is unusable.")
    add_data_source_arguments(p)
    add_preference_arguments(p)
    p.add_argument("--report", default=None, help="write problems and warnings to this CSV (path,row,image,severity,problem)")
    add_workers_argument(p)
    add_progress_argument(p)
    p.set_defaults(run=_command("check_data", "check_data_command"))


def _add_splits(sub: argparse._SubParsersAction) -> None:
    p = _subparser(sub, "splits", "write seeded train/val split files (<out>/<k>/train.csv, val.csv), "
                                  "check split files (--from), or write the original ones (--export original)",
                   "Write seeded train/val split files <out>/<k>/train.csv, val.csv, or check existing split "
                   "folders against the dataset (--from DIR, read-only; exit 1 when a split is unusable), or "
                   "write the original authors' split folders that ship with ipce (--export original).")
    add_data_source_arguments(p)
    p.add_argument("--out", default=None, help="folder for the split files (required unless --from)")
    p.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                   help="check the split folders DIR/<k>/train.csv, val.csv against the dataset instead "
                        "(read-only): one line per split with train, val, missing and overlap counts")
    p.add_argument("--json", action="store_true", help="with --from: print the counts as a JSON list")
    p.add_argument("--export", choices=["original"], default=None,
                   help="write the original authors' split folders of --preset (shipped with ipce) into --out, "
                        "in their layout (<out>/<k>/train.csv, val.csv, numbered as published); needs no data")
    add_n_splits_argument(p)
    p.add_argument("--ratio", type=float, default=0.8, help="training fraction of each split")
    p.add_argument("--seed", type=int, default=SPLIT_SEED, help="random seed")
    add_group_by_argument(p)
    p.set_defaults(run=_command("splits", "splits_command"))


def _add_train(sub: argparse._SubParsersAction) -> None:
    _add_module_command(
        sub, "train",
        "train on a benchmark or custom data, split by split",
        "Train on a benchmark (--preset) or custom data (--annotations FILE --images DIR), split by split, into a "
        "run folder (--out). Every flag given overrides the preset's recipe.")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    _add_module_command(
        sub, "predict",
        "score a dataset, a CSV or a folder (one checkpoint or an ensemble); challenge submissions",
        "Score a dataset, a CSV or a folder with one checkpoint or an ensemble, and write challenge submissions. "
        "Unreadable images are skipped and listed; then the exit status is 3 (partial results).")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = _subparser(sub, "demo", "generate a synthetic dataset, train a tiny model, evaluate, score (minutes, CPU)",
                   "The main job end to end on built-in data: generate a synthetic AIGC quality set, pretrain and "
                   "fine-tune a tiny CLIP, evaluate it and score held-out images (minutes on a laptop CPU).")
    p.add_argument("--out", default="demo-out", help="output folder")
    p.add_argument("--quick", action="store_true", help="the minute-long version")
    p.add_argument("--preferences", action="store_true",
                   help="the demo on human choices: pairs of images of one prompt labelled by a noisy rater, a "
                        "preference model trained on them, its held-out pairwise accuracy")
    add_device_argument(p)
    add_threads_argument(p, workers=True)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16", help="training and scoring precision")
    add_progress_argument(p)
    p.set_defaults(run=_command("demo", "demo_command"))


def _add_weights(sub: argparse._SubParsersAction) -> None:
    _add_module_command(
        sub, "weights",
        "list the pretrained CLIP files ipce knows, or fetch one (explicit download)",
        "The pretrained CLIP files ipce knows: where each is looked for, whether it is present, and `fetch NAME` "
        "to download one (ipce never downloads otherwise).")


def _add_rank(sub: argparse._SubParsersAction) -> None:
    _add_module_command(
        sub, "rank",
        "rank the images of each prompt best first (best of N), optionally a contact sheet",
        "Rank a folder of candidate images within each prompt, best first: a CSV image,prompt,score,rank (scores "
        "as `ipce predict` gives them), optionally only the best --top K of each and a contact sheet (--sheet). "
        "Unreadable images are left out and listed; then the exit status is 3.")


def _add_explain(sub: argparse._SubParsersAction) -> None:
    _add_module_command(
        sub, "explain",
        "quality maps: score every crop of a grid over each image (PNG + CSV)",
        "Per image, score every 224x224 crop of a grid (default: the method's own stride) from its own level "
        "distribution, and write <out>/<stem>.png (the map over the image, a colour bar, the final score) and "
        "<out>/<stem>.csv (x, y, size, score in the image's pixels).")


def _add_serve(sub: argparse._SubParsersAction) -> None:
    _add_module_command(
        sub, "serve",
        "serve a web page and a JSON API that score uploaded images (needs ipce[serve])",
        "Load the scorer once and serve, from one process, a web page (upload images, type the prompt, see scores, "
        "ranking and quality maps) and a JSON API: POST /api/score, GET /api/health, OpenAPI docs at /docs. "
        "Requests are scored in shared batches. Needs the serve extra: pip install -e \".[serve]\" in a clone.")


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    from ipce.commands.reproduce import LEFT_OUT
    from ipce.commands.train import add_train_arguments

    p = _add_module_command(
        sub, "reproduce",
        "the paper's table in one command: every row trained, ours against the paper's, resumable",
        "Train each row of the paper's table (and AGIQA-1K) with its preset's recipe on the original splits "
        "(shipped with ipce), one run folder per row under --out, and write the table (table.md, table.json, "
        "table.png). Rows whose dataset is not under --data-root are skipped. Prints an estimate (epochs, images, "
        "time from a timed warm-up) first. Every training flag (--backbone, --precision, --device, --batch-size, "
        "...) applies to every row.")
    add_train_arguments(p, leave_out=LEFT_OUT)


def _add_export(sub: argparse._SubParsersAction) -> None:
    _add_module_command(
        sub, "export",
        "write a checkpoint as a model folder to share (safetensors or ONNX) with its model card",
        "Write a checkpoint as a folder a model hub takes: model.safetensors (or, with --format onnx, the image and "
        "text encoders as ONNX graphs), config.json and README.md, a model card written from the run (data, "
        "protocol, metrics over splits beside the paper's, base weights, limits, how to load). Every --checkpoint "
        "and ipce.load_scorer take the folder.")


# Subcommands register here, one adder per subcommand.
ADDERS = [
    _add_demo,
    _add_score,
    _add_train,
    _add_check_data,
    _add_splits,
    _add_predict,
    _add_weights,
    _add_rank,
    _add_explain,
    _add_serve,
    _add_reproduce,
    _add_export,
]


def _version() -> str:
    """`ipce X (torch Y, open_clip Z)`: ipce's version and those of the two libraries its scores depend on,
    read from the installed packages' metadata (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:  # ipce: a source tree that was never installed
            if package != "ipce":
                return "not installed"
            from ipce import __version__

            return __version__
    return f"ipce {installed('ipce')} (torch {installed('torch')}, open_clip {installed('open_clip_torch')})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipce", description="AIGC image quality by image-prompt correspondence",
                                     epilog=exit_codes_epilog(), formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=_version(),
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for add in ADDERS:
        add(sub)
    return parser


def _refuse_unknown(parser: argparse.ArgumentParser, command: str | None, extra: list[str]) -> None:
    """Unknown arguments, said by the subcommand's parser (its usage, not the top level's), with the
    nearest flag of that subcommand for a mistyped one."""
    import difflib

    chosen = next((a.choices.get(command) for a in parser._actions
                   if isinstance(a, argparse._SubParsersAction)), None) or parser
    known = [s for action in chosen._actions for s in action.option_strings]
    near = [difflib.get_close_matches(arg.split("=")[0], known, n=1) for arg in extra if arg.startswith("-")]
    hint = "; ".join(f"did you mean {m[0]}?" for m in near if m)
    chosen.error(f"unrecognized arguments: {' '.join(extra)}" + (f" ({hint})" if hint else ""))


class ConsoleHandler(logging.Handler):
    """What ipce's layers report (the `ipce` logger tree), shown as the commands print: each message on
    stdout (the one of the moment), above any progress bar; a warning starts with "warning: ". A branch
    of the tree with a handler of its own (`ipce serve`'s request log) is left to that handler."""

    def emit(self, record: logging.LogRecord) -> None:
        name = record.name
        while "." in name:  # ipce.serve.auth, ipce.serve: stop below the `ipce` logger itself
            if logging.getLogger(name).handlers:
                return
            name = name.rsplit(".", 1)[0]
        try:
            from tqdm import tqdm

            text = self.format(record)
            if record.levelno >= logging.ERROR:
                text = f"error: {text}"
            elif record.levelno >= logging.WARNING:
                text = f"warning: {text}"
            tqdm.write(text, file=sys.stdout)
        except Exception:  # noqa: BLE001  (logging's contract: a failing handler reports, never raises)
            self.handleError(record)


def install_console(level: int = logging.INFO) -> None:
    """Show the `ipce` logger tree's messages on the terminal (once per process), from `level` unless the
    caller already set the logger's level (then from that one)."""
    logger = logging.getLogger("ipce")
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        logger.addHandler(ConsoleHandler())
    if logger.level == logging.NOTSET:
        logger.setLevel(level)


def skip_final_collection() -> None:
    """At the interpreter's exit, leave the objects alive then out of its last garbage collections
    (gc.freeze, registered once with atexit): with torch and open_clip imported, those walk millions
    of objects to free memory the OS takes back anyway, about 2 s on a loaded 2-core machine after every
    command (and after each torchrun rank, before torchrun can end). The commands close their files
    themselves; atexit handlers still run, and nothing changes until the interpreter exits."""
    import atexit
    import gc

    atexit.unregister(gc.freeze)  # once, however many times main runs in one process
    atexit.register(gc.freeze)


def main(argv: list[str] | None = None) -> int:
    install_console()
    skip_final_collection()
    try:
        parser = build_parser()
    except IpceError as err:  # a bad $IPCE_PRESETS file (train's help lists the presets)
        print(f"ipce: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    args, extra = parser.parse_known_args(argv)
    if extra:
        _refuse_unknown(parser, args.command, extra)
    if args.command is None:  # bare `ipce`: the help, as git and pip do
        parser.print_help()
        return EXIT_OK
    try:
        return int(args.run(args) or 0)
    except IpceError as err:  # the API names its parameters (combine=); the CLI says the flag (--combine)
        print(f"ipce: error: {err.with_flags() if isinstance(err, ParameterError) else err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("ipce: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
