"""`ipce predict`: score many images with one checkpoint or an ensemble, and write challenge
submissions (`AIGC_DB_AIGCQA30K_VAL.py` / `_TEST.py` run `ipce predict --preset aigcqa30k
--subset val|test --submission`). The scoring is ipce.engine.predict; this module reads the
flags, prints and writes the files.

Data, one of (ipce.commands.flags):
  --preset NAME [--subset S] [--data-root DIR] [--target T]   a published dataset
  --annotations FILE --images DIR                              any CSV/XLSX with a header
  --images DIR --prompt TEXT                                   every image in a folder, one prompt
  --images DIR --prompts FILE                                  a folder and a CSV `image,prompt`
  --preferences FILE --images DIR                              human choices (ImageRewardDB JSON, pair CSV)

Output: `--out FILE.csv` with `image,prompt,score` (plus `score_1, score_2, ...` per
checkpoint when ensembling, and `mos` when the annotations carry scores); with scores, the
metrics are printed and a scatter plot is written to `<out stem>.png`. With `--preferences`, every
distinct image of the file is scored once (a row per image) and the preference metrics are printed
(pairwise accuracy over untied pairs, accuracy with ties as half, mean Kendall tau per group). With `--submission`,
`--out DIR` gets output.txt, readme.txt and submission.zip (see ipce.engine.submission).

Sharded data (ipce.engine.shards; the shards extra):
  --webdataset "shards/{00000..00127}.tar" [--prompt-key FIELD]  WebDataset tar shards
  --parquet "meta/{0..9}.parquet" [--prompt-col C] [--image-col C] [--key-col C]
write one Parquet file per shard into the folder `--out` (or `--out FILE.parquet` for one shard):
key, prompt, score, each model's score, with `--levels` the level probabilities, and the problem
of a sample that could not be scored. `--engine ray` scores the shards on a Ray cluster
(ipce.engine.ray_predict; the ray extra).

Unreadable images are skipped and listed in `<out stem>.errors.csv` (`path,problem`); the
exit status is 3 (EXIT_PARTIAL, partial results) when any was skipped, 1 when none could be read
(ipce.commands.flags.partial_exit: the policy of every command that scores images). A submission needs every
image: it is refused (exit 1).

Rows stream to `<out>.parts/` as batches finish, beside the run's settings `<out>.ipce.json`
(ipce.engine.parts); at the end they are merged into `--out` in annotation order and the part
files removed. After any stop the same command with `--resume` scores only what is missing and
writes the file an uninterrupted run writes. One run per output: rank 0 holds `<out>.lock`
(ipce.utils.lock) for the whole run, and another `ipce predict` on the same --out is refused. Under `torchrun --nproc_per_node=N -m ipce predict`
each process loads its model before joining the process group (so no rank waits on another's
start-up but the slowest's) and scores every N-th block left, with no collective until the end; rank 0
writes the output, the errors and the metrics (and exits 0 with unreadable images skipped: torchrun
would report status 3 as a failure).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path

from ipce.commands.flags import (EXIT_PARTIAL, add_data_source_arguments, add_model_arguments,
                                 add_preference_arguments, add_prompt_source_arguments, add_threads_argument,
                                 check_prompt_and_checkpoints, partial_exit, records_from_args, scorer_from_args,
                                 scorer_options, use_cores)
from ipce.datasets.checks import prompt_warnings
from ipce.errors import IpceError

EXIT_SKIPPED = EXIT_PARTIAL  # finished, with the unreadable images skipped


# ----------------------------------------------------------------------------- flags

def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The models of `ipce predict` (the model flags) and how to run them."""
    add_model_arguments(p)
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default: 16)")
    add_threads_argument(p, workers=True, threads=False)  # --threads: a model flag


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `ipce predict`."""
    add_data_source_arguments(p, leave_out=("--duplicates",))
    add_prompt_source_arguments(p)
    add_preference_arguments(p)
    p.add_argument("--out", default=None,
                   help="CSV of scores (default: predictions.csv); with --submission a folder "
                        "(default: submissions/<subset>)")
    p.add_argument("--submission", action="store_true",
                   help="write output.txt, readme.txt and submission.zip (NTIRE 2024 format) into --out")
    p.add_argument("--resume", action="store_true",
                   help="continue a run that stopped: score only the images without a row in <out>.parts/ "
                        "(refused when a setting differs from <out>.ipce.json); without it a run starts over")
    add_shard_arguments(p)
    add_run_arguments(p)


def add_shard_arguments(p: argparse.ArgumentParser) -> None:
    """Sharded inputs, Parquet outputs and the Ray engine (ipce.engine.shards, ipce.engine.ray_predict)."""
    p.add_argument("--webdataset", default=None, metavar="PATTERN",
                   help="WebDataset tar shards, brace ranges allowed (\"shards/{00000..00127}.tar\"); the image is "
                        "a jpg/png/webp member, the prompt the txt member (or --prompt-key)")
    p.add_argument("--parquet", default=None, metavar="PATTERN",
                   help="Parquet files (brace ranges allowed) with a prompt column (--prompt-col) and an image "
                        "column (--image-col) of bytes, paths or {bytes, path} structs")
    p.add_argument("--prompt-key", default=None, metavar="FIELD",
                   help="--webdataset: read the prompt from this field of each sample's json member")
    p.add_argument("--key-col", default=None, metavar="COL",
                   help="--parquet: the column that names each row in the output (default: the image path, "
                        "else the row number)")
    p.add_argument("--levels", action="store_true",
                   help="shards: also write each model's level probabilities (p_badly ... p_perfectly)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="shards: score in this process (and torchrun's) or as Ray tasks, one shard per task")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="--engine ray: the cluster to join (e.g. auto, ray://head:10001; default: a new local one)")


# ----------------------------------------------------------------------------- the command

def _validate(args) -> None:
    from ipce.models.views import ViewConfig  # imported here: it brings torch, which `ipce --help` does not need

    # ViewConfig holds the --resize/--patches check; building one here fails before any record is read
    ViewConfig(**{k: v for k, v in (("resize", args.resize), ("patches", args.patches)) if v is not None})


def _write_errors(path: Path, errors: list[tuple[str, str]]) -> None:
    from ipce.utils.io import write_csv

    if errors:
        write_csv(path, ["path", "problem"], errors)
    else:
        path.unlink(missing_ok=True)  # a list from an earlier run would now be wrong


def _header(models: int, with_target: bool) -> list[str]:
    return ["image", "prompt", "score"] + ([f"score_{m + 1}" for m in range(models)] if models > 1 else []) + \
        (["mos"] if with_target else [])


def _final_rows(store, records, models: int, with_target: bool, scored: list | None, by_index: dict | None = None):
    """The output's rows in annotation order, from the part files; each scored record's
    (score, target) is appended to `scored` (unless None), its score to `by_index` (unless None)."""
    for index, problem, values in store.merged():
        if problem:
            continue
        record = records[index]
        score = float(values[0])
        if scored is not None:
            scored.append((score, record.target))
        if by_index is not None:
            by_index[index] = score
        row = [record.name, record.prompt, f"{score:.7f}"]
        if models > 1:
            row += [f"{float(v):.7f}" for v in values[1:]]
        if with_target:
            row.append("" if record.target is None else repr(record.target))
        yield row


def _report_metrics(scored: list, plot_path: Path) -> None:
    from ipce.engine.evaluate import metrics_of
    from ipce.utils.report import plot_scatter

    pred = [s for s, t in scored if t is not None]
    mos = [t for _, t in scored if t is not None]
    if len(pred) < 2:
        if pred:
            print("metrics: need at least 2 scored images with a MOS")
        return
    m = metrics_of(pred, mos)
    shown = {k: "n/a" if math.isnan(v) else f"{v:.4f}" for k, v in m.items()}  # NaN: undefined
    print(f"SRCC {shown['srcc']}  PLCC {shown['plcc']}  KRCC {shown['krcc']}  RMSE {shown['rmse']}  "
          f"(n={len(pred)})")
    plot_scatter(pred, mos, plot_path, title=f"{plot_path.stem}: n={len(pred)}")
    print(f"scatter plot: {plot_path}")


def _report_preferences(preferences, by_index: dict) -> None:
    from ipce.engine.evaluate import preference_metrics_of

    groups, members = preferences
    m = preference_metrics_of(groups, members, by_index)
    shown = {k: "n/a" if math.isnan(m[k]) else f"{m[k]:.4f}" for k in ("pair_accuracy", "pair_accuracy_ties",
                                                                          "kendall_tau")}
    print(f"pairwise accuracy {shown['pair_accuracy']} over {m['pairs']} ordered pairs; with ties as half "
          f"{shown['pair_accuracy_ties']} over {m['pairs'] + m['tied_pairs']} pairs; Kendall tau "
          f"{shown['kendall_tau']} (mean over {m['groups']} groups)")
    if m["left_out_pairs"] or m["left_out_tied_pairs"]:
        print(f"left out for unreadable images: {m['left_out_pairs']} ordered pairs, {m['left_out_tied_pairs']} tied "
              f"pairs, {m['left_out_groups']} groups left with fewer than two images")


def _records(args):
    """(records, description, preferences: (groups, each group's record indices) or None)."""
    if getattr(args, "preferences", None) is None:
        return (*records_from_args(args), None)
    from ipce.commands.flags import preferences_from_args
    from ipce.datasets.preferences import group_records

    given = [f for f in ("annotations", "preset", "prompt", "prompts") if getattr(args, f, None) is not None]
    if given:
        raise IpceError(f"--preferences and --{given[0]}: score one data file at a time")
    found, source = preferences_from_args(args)
    groups = found.usable()
    records, members = group_records(groups)
    return records, source, (groups, members)


def _output_paths(args):
    """(csv, errors, plot, submission folder or None) for --out and --submission."""
    if getattr(args, "submission", False):
        folder = Path(args.out or f"submissions/{args.subset or 'custom'}")
        if folder.exists() and not folder.is_dir():
            raise IpceError(f"--out {folder}: a file; with --submission --out names a folder")
        return folder / "predictions.csv", folder / "errors.csv", folder / "predictions.png", folder
    csv_path = Path(args.out or "predictions.csv")
    if csv_path.is_dir():
        raise IpceError(f"--out {csv_path}: a folder; give a CSV file name (or use --submission)")
    return (csv_path, csv_path.with_name(f"{csv_path.stem}.errors.csv"), csv_path.with_name(f"{csv_path.stem}.png"),
            None)


def _on_main(make, *args):
    """`make(*args)` on rank 0 only: its result, or the one-line error it raised (kept, to be sent to
    every rank by `_from_main` once the group is joined); None on the other ranks."""
    from ipce.utils.distributed import is_main

    if not is_main():
        return None
    try:
        return make(*args)
    except IpceError as err:  # every rank stops with the same line instead of waiting for rank 0
        return err


def _from_main(result):
    """Rank 0's `_on_main` result on every rank (the process group joined); its error raised on each."""
    from ipce.utils.distributed import broadcast

    result = broadcast(result)
    if isinstance(result, IpceError):
        raise result
    return result


def _prepare(scorer, args, records, store):
    """Rank 0: the run's settings and its plan (the output's state read, or reset, and the settings written)."""
    from ipce.engine.parts import run_settings
    from ipce.engine.predict import plan_run

    settings = run_settings(scorer, args.checkpoint, args.weights, records, args.batch_size)
    return settings, plan_run(store, settings, len(records), args.batch_size, args.resume)


def predict_command(args: argparse.Namespace) -> int:
    from ipce.utils.distributed import is_main
    from ipce.utils.lock import hold_lock

    if args.webdataset or args.parquet:
        return _predict_shards(args)
    if args.engine != "local":
        raise IpceError("--engine ray: scores shards; give --webdataset or --parquet (folders and CSVs run here "
                        "or under torchrun)")
    paths = _output_paths(args)
    # one run per output: rank 0 holds <out>.lock until the end; a second run (not a rank of this
    # one) is refused at once. The OS drops the lock when the holder dies, however it dies.
    with hold_lock(paths[0], f"--out {args.out or paths[0]}") if is_main() else contextlib.nullcontext():
        if args.batch_size < 1:  # the flags and files first: a mistake is said before torch and the model load
            raise IpceError(f"--batch-size {args.batch_size}: must be at least 1")
        check_prompt_and_checkpoints(args)
        records, source, preferences = _read_records(args)
        _validate(args)
        try:
            return _run(args, records, source, paths, preferences)
        except KeyboardInterrupt:
            if not is_main():
                raise
            print(f"ipce: interrupted; the rows scored so far are kept in {paths[0].name}.parts/: the same command "
                  "with --resume continues from there", file=sys.stderr)
            return 130


def _read_records(args):
    """The records of the data flags, their source and the preference groups (or None), with warnings
    about them printed once."""
    from ipce.utils.distributed import is_main

    records, source, preferences = _records(args)
    for warning in prompt_warnings(r.prompt for r in records) if is_main() else ():  # once per run, with counts
        print(f"ipce: warning: {warning}", file=sys.stderr)
    if getattr(args, "prompts", None) and is_main():
        from ipce.engine.predict import unlisted_images

        missed = unlisted_images(args.images, records)
        if missed:
            print(f"ipce: warning: {len(missed)} image file(s) in {args.images} are not listed in {args.prompts} "
                  f"and are not scored (e.g. {missed[0].name}); add rows image,prompt for them", file=sys.stderr)
    if not records:
        raise IpceError(f"{source}: no images listed")
    return records, source, preferences


def _run(args, records, source, paths, preferences=None) -> int:
    from ipce.engine.parts import PartStore
    from ipce.engine.predict import check_generators
    from ipce.utils.distributed import dist_info, join_group, local_device

    rank, world, _ = dist_info()
    main = rank == 0
    csv_path, errors_path, plot_path, folder = paths
    args = argparse.Namespace(**{**vars(args), "workers": use_cores(args)})  # torch threads set beside them
    # under torchrun every rank loads its model and rank 0 plans the run before joining the group (gloo on
    # the CPU): joining first made each rank wait for the others' start-up in turn, not just the slowest
    device = local_device(args.device)
    scorer = scorer_from_args(args, device=device)
    check_generators(scorer, records)
    store = PartStore(csv_path)
    prepared = _on_main(_prepare, scorer, args, records, store)
    join_group(device)
    settings, plan = _from_main(prepared)
    if plan.error:
        raise IpceError(plan.error)
    if plan.stale and main:
        print(plan.stale)
    if plan.complete:
        unreadable = plan.complete.get("unreadable", 0)
        if main:
            print(f"nothing left to score: {csv_path} is complete ({plan.complete.get('scored', 0)} scored, "
                  f"{unreadable} unreadable" + (f", listed in {errors_path}" if unreadable else "") + ")")
        if unreadable and not plan.complete.get("scored", 0):
            raise IpceError(f"none of the {unreadable} image(s) could be read, listed in {errors_path}")
        return EXIT_SKIPPED if unreadable and world == 1 else 0
    if main:
        _print_start(args, scorer, records, source, device, world, plan, store)
    scored, unreadable, seconds = _score_share(scorer, records, plan, store, args, rank, world)
    if not main:
        return 0
    code = _finish(args, scorer, records, store, settings, plan, (scored, unreadable, seconds), paths, preferences)
    # torchrun reports any status but 0 as the process's failure (and itself exits 1): partial
    # results under torchrun exit 0, the errors file tells them
    return 0 if world > 1 else code


def _print_start(args, scorer, records, source, device, world, plan, store) -> None:
    models = ", ".join(f"{c} (CLIP's centre 224 px view)" if m.views.mode == "clip" else
                       f"{c} ({m.views.resize} px, {m.views.patches} crops"
                       f"{', generator prefix' if m.prompt_prefix == 'generator' else ''})"
                       for c, m in zip(args.checkpoint, scorer.members))
    combine = f", combine {scorer.combine}" if len(scorer.members) > 1 else ""
    lo, hi = scorer.scale
    scale = "" if (lo, hi) == (0, 5) else f", scores on {lo:g}..{hi:g} (the models' training scale)"
    where = f"{world} processes on {device.type}" if world > 1 else str(device)
    print(f"scoring {len(records)} images of {source} on {where} with {models}{combine}{scale}")
    if plan.cleared:
        print(f"starting over: removed the partial results of an earlier run in {store.folder} "
              "(--resume continues such a run)")
    if plan.already:
        print(f"resuming: {plan.already} of {len(records)} images were done by an earlier run; scoring the rest")


def _score_share(scorer, records, plan, store, args, rank: int, world: int) -> tuple[int, int, float]:
    """This rank's share of the blocks left (ipce.engine.predict.rank_share), streamed to its part file,
    with no collective between blocks; the totals over every rank: (scored, unreadable, seconds of the slowest)."""
    from ipce.engine.predict import RankBar, rank_share, score_blocks
    from ipce.utils.distributed import gather
    from ipce.utils.progress import progress_bar

    mine = rank_share(plan.blocks, rank, world)
    with progress_bar(total=len(records), initial=plan.already, desc="predict", unit="img", leave=False,
                      enabled=not args.no_progress and rank == 0) as bar, \
            store.appender(plan.attempt, rank, len(scorer.members)) as writer:
        counts = score_blocks(scorer, records, mine, args.batch_size, writer, workers=args.workers,
                              bar=RankBar(bar, world))
    totals = gather(counts)  # also the one wait: it returns once every rank has closed its part file
    return sum(t[0] for t in totals), sum(t[1] for t in totals), max(t[2] for t in totals)


def _finish(args, scorer, records, store, settings, plan, counts, paths, preferences=None) -> int:
    """Rank 0: the output in annotation order from the part files, the errors file, the counts,
    metrics, the submission; then the part files go."""
    from ipce.utils.stream import stream_csv

    scored_now, unreadable_now, seconds = counts
    csv_path, errors_path, plot_path, folder = paths
    done = scored_now + unreadable_now
    rate = done / seconds if seconds > 0 else float("inf")
    errors = [(str(records[i].image), problem) for i, problem, _ in store.merged() if problem]
    total_scored = len(records) - len(errors)
    print(f"scored {total_scored} of {len(records)} images"
          + (f" ({scored_now} by this run, {plan.already} done before)" if plan.already else "")
          + f" in {seconds:.1f} s ({rate:.2f} images/s)")
    _write_errors(errors_path, errors)
    if errors:
        print(f"skipped {len(errors)} unreadable image(s), listed in {errors_path}; first: {errors[0][1]}")
    if folder is not None and errors:
        store.clear()  # not complete: a rerun after the images are fixed scores them all
        raise IpceError(f"submission refused: {len(errors)} of {len(records)} images could not be scored "
                        f"(listed in {errors_path}); the challenge needs a score for every image: fix them and rerun")

    with_target = any(r.target is not None for r in records)
    models = len(scorer.members)
    scored = [] if with_target or folder is not None else None  # the scores, only where metrics or a submission need them
    by_index = {} if preferences is not None else None
    stream_csv(csv_path, _header(models, with_target),
               _final_rows(store, records, models, with_target, scored, by_index), fsync=True)
    print(f"wrote {csv_path}")
    # complete only now that the rows are on disk, with the output's size: a resume checks it is still there
    store.write_settings(settings, complete=True, scored=total_scored, unreadable=len(errors),
                         out_bytes=csv_path.stat().st_size)
    store.clear()
    if with_target:
        _report_metrics(scored, plot_path)
    if preferences is not None:
        _report_preferences(preferences, by_index)
    if folder is not None:
        from ipce.engine.submission import describe_scorer, write_submission

        paths = write_submission(folder, [r.name for r in records], [s for s, _ in scored],
                                 runtime_per_image=seconds / max(done, 1), cpu=scorer.device.type == "cpu",
                                 description=describe_scorer(scorer, args.checkpoint))
        print(f"wrote {paths['output']}, {paths['readme']} and {paths['zip']}")
    return partial_exit(len(records), [problem for _, problem in errors], f", listed in {errors_path}")


# ----------------------------------------------------------------------------- shards

def _shard_sources(args):
    """The shards of --webdataset or --parquet, with their reading options."""
    from ipce.datasets.shards import ShardSource, expand_shards

    if args.webdataset and args.parquet:
        raise IpceError("--webdataset and --parquet: give only one")
    other = [f for f in ("--preset", "--annotations", "--images", "--prompt", "--prompts")
             if getattr(args, f[2:], None) is not None]
    if other:
        raise IpceError(f"{other[0]}: not used with {'--webdataset' if args.webdataset else '--parquet'} "
                        "(the shards hold the images and prompts)")
    if args.submission:
        raise IpceError("--submission: needs a published dataset (--preset), not shards")
    if args.webdataset:
        if args.key_col:
            raise IpceError("--key-col: a --parquet flag; a WebDataset sample's key is its tar members' name")
        return [ShardSource(p, "webdataset", prompt_key=args.prompt_key)
                for p in expand_shards(args.webdataset, "--webdataset")]
    if args.prompt_key:
        raise IpceError("--prompt-key: a --webdataset flag; with --parquet the prompt is a column (--prompt-col)")
    return [ShardSource(p, "parquet", prompt_col=args.prompt_col, image_col=args.image_col, key_col=args.key_col)
            for p in expand_shards(args.parquet, "--parquet")]


def _shard_settings(scorer, args, sources) -> dict:
    from ipce.engine.parts import run_settings
    from ipce.engine.shards import shards_identity

    return {**run_settings(scorer, args.checkpoint, args.weights, [], args.batch_size),
            "input": shards_identity(sources), "levels": args.levels}


def _prepare_shards(scorer, args, sources, store, tasks):
    """Rank 0: the shard run's settings and its plan."""
    from ipce.engine.shards import plan_shards

    settings = _shard_settings(scorer, args, sources)
    return settings, plan_shards(store, settings, tasks, args.resume)


def _predict_shards(args) -> int:
    """`ipce predict --webdataset/--parquet`: one Parquet output per shard (ipce.engine.shards), one run
    per --out (rank 0 holds `<out>.lock`, as for CSV outputs)."""
    from ipce.utils.distributed import is_main
    from ipce.utils.lock import hold_lock

    out = Path(args.out or "scores")
    with hold_lock(out, f"--out {out}") if is_main() else contextlib.nullcontext():
        if args.batch_size < 1:
            raise IpceError(f"--batch-size {args.batch_size}: must be at least 1")
        _validate(args)
        return _run_shards(args, out)


def _run_shards(args, out: Path) -> int:
    from ipce.engine.parts import PartStore
    from ipce.engine.shards import ShardTask, output_paths
    from ipce.utils.distributed import dist_info, join_group, local_device

    rank, world, _ = dist_info()
    if args.engine == "ray" and world > 1:
        raise IpceError("--engine ray: run it as one process (Ray starts the workers), not under torchrun")
    sources = _shard_sources(args)
    args = argparse.Namespace(**{**vars(args), "workers": use_cores(args)})  # torch threads set beside them
    tasks = [ShardTask(s, o, args.batch_size, args.levels, args.workers)
             for s, o in zip(sources, output_paths(sources, out))]
    device = local_device(args.device)  # the model loaded and the run planned before joining, as in _run
    scorer = scorer_from_args(args, device=device)
    store = PartStore(out)
    prepared = _on_main(_prepare_shards, scorer, args, sources, store, tasks)
    join_group(device)
    settings, plan = _from_main(prepared)
    if plan.error:
        raise IpceError(plan.error)
    if plan.complete:
        if rank == 0:
            print(f"nothing left to score: {out} is complete ({plan.complete.get('scored', 0)} scored, "
                  f"{plan.complete.get('unreadable', 0)} unreadable)")
        return 0
    if rank == 0:
        where = f"Ray ({args.ray_address or 'a local instance'})" if args.engine == "ray" else (
            f"{world} processes on {device.type}" if world > 1 else str(device))
        print(f"scoring {len(plan.left)} of {len(tasks)} shards on {where} into {out}"
              + (f" ({plan.done} done by an earlier run)" if plan.done else "")
              + (f"; removed {plan.cleared} output(s) of an earlier run (--resume continues one)"
                 if plan.cleared else ""))
    seconds = _score_shards(scorer, args, [tasks[i] for i in plan.left], rank, world, device)
    if rank != 0:
        return 0
    code = _finish_shards(store, settings, tasks, out, seconds)
    return 0 if world > 1 else code  # torchrun takes any other status for a failure


def _score_shards(scorer, args, left, rank: int, world: int, device) -> float:
    """Score the shards left: as Ray tasks, or this rank's share (every world-th); the wall time."""
    import time

    from tqdm.auto import tqdm

    from ipce.engine.shards import run_local
    from ipce.utils.distributed import barrier

    start = time.perf_counter()
    if args.engine == "ray":
        from ipce.engine.ray_predict import run_on_ray

        with tqdm(total=len(left), desc="predict", unit="shard", dynamic_ncols=True, leave=False,
                  disable=args.no_progress) as bar:
            run_on_ray({**scorer_options(args), "device": device.type}, left, args.ray_address, bar=bar)
    else:
        with tqdm(desc="predict", unit="img", dynamic_ncols=True, leave=False,
                  disable=args.no_progress or rank != 0) as bar:
            run_local(scorer, left[rank::world], bar=bar)
        barrier()  # every rank's shards written before rank 0 reads them
    return time.perf_counter() - start


def _finish_shards(store, settings, tasks, out: Path, seconds: float) -> int:
    """Rank 0: the problems of every shard into the errors file, the counts, the sidecar marked complete."""
    from ipce.engine.shards import problems_of
    from ipce.utils.io import write_csv

    scored, problems = problems_of(tasks)
    errors_path = out.with_name(f"{out.stem}.errors.csv")
    if problems:
        write_csv(errors_path, ["shard", "key", "problem"], problems)
    else:
        errors_path.unlink(missing_ok=True)
    store.write_settings(settings, complete=True, scored=scored, unreadable=len(problems))
    total = scored + len(problems)
    print(f"scored {scored} of {total} samples in {len(tasks)} shard(s) in {seconds:.1f} s; wrote "
          f"{tasks[0].out if len(tasks) == 1 else f'{out}/*.parquet'}")
    if problems:
        print(f"skipped {len(problems)} unusable sample(s), listed in {errors_path}; first: {problems[0][2]}")
    return partial_exit(total, [problem for _, _, problem in problems], f", listed in {errors_path}")
