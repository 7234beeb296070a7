"""`ipce check-data`: read a dataset's annotations, decode every image, print a summary.

Every problem is reported in one run: bad rows, bad images, and duplicated images
(warnings). Exit status 0 when every record is usable (warnings allowed), 1 when
any is not or the annotation file itself cannot be read. `--report FILE.csv` gets
one `path,row,image,severity,problem` row per problem and warning.
"""
from __future__ import annotations

import argparse

from ipce.commands.flags import annotations_from_args, preferences_from_args
from ipce.errors import DataError, IpceError


def _unusable(err: DataError, report_path) -> int:
    from ipce.datasets.checks import write_report_csv
    from ipce.datasets.problems import Problem

    problem = Problem.of(err)
    print(f"annotations: unusable ({problem.kind})")
    print(f"  {problem.message}")
    if report_path:
        write_report_csv(report_path, [problem])
        print(f"report: {report_path}")
    return 1


def _workers(args) -> int:
    from ipce.utils.threads import split_cores

    workers = split_cores(None, getattr(args, "workers", None))[1]  # 0: decode in this process
    if workers < 0:
        raise IpceError(f"--workers {workers}: must be 0 or more")
    return workers


def _check_preferences(args: argparse.Namespace, report_path) -> int:
    """check-data on a preference file: what it holds, every bad entry and image, what is left out."""
    from ipce.datasets.checks import count_long_prompts, write_report_csv
    from ipce.datasets.preferences import check_preference_images, count_preferences, drop_images

    given = [f for f in ("annotations", "preset", "prompt", "prompts") if getattr(args, f, None) is not None]
    if given:
        raise IpceError(f"--preferences and --{given[0]}: check one data file at a time")
    try:
        found, source = preferences_from_args(args)
    except DataError as err:
        if getattr(err, "kind", None) == "bad-option":
            raise
        return _unusable(err, report_path)
    bad, image_problems, report = check_preference_images(found, workers=_workers(args),
                                                          progress=not getattr(args, "no_progress", False))
    problems = [*found.problems, *image_problems]
    read = count_preferences(found.groups)
    kept, dropped = drop_images(found.groups, bad)
    usable = count_preferences(kept)
    print(f"data: {source}")
    print(f"entries: {found.rows} in the file, {len(found.groups)} usable ({len(found.problems)} left out)")
    print(f"holds: {read.line()}")
    print(f"images found: {report.images_found} of {read.images}")
    for line in _problem_lines(problems, found.warnings):
        print(line)
    if bad or dropped:
        print(f"left out for unreadable images: {len(bad)} images, {read.pairs - usable.pairs} ordered pairs, "
              f"{read.tied_pairs - usable.tied_pairs} tied pairs, {dropped} groups left with fewer than two images")
    print(f"usable: {usable.line()}")
    long = count_long_prompts(g.prompt for g in found.groups)
    print("prompts over 77 tokens: " + ("not counted (open_clip is not installed)" if long is None else
                                        f"{long} of {len(found.groups)} groups (truncated when scored)"))
    if report_path:
        write_report_csv(report_path, problems, found.warnings)
        print(f"report: {report_path} ({len(problems)} problem row(s), {len(found.warnings)} warning(s))")
    return 0 if not problems else 1


def _problem_lines(problems, warnings, show: int = 10) -> list[str]:
    from collections import Counter

    lines = []
    for label, items in (("problems", problems), ("warnings", warnings)):
        if not items:
            lines.append(f"{label}: none")
            continue
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(Counter(p.kind for p in items).items()))
        lines.append(f"{label}: {len(items)} ({kinds}{'; reported, not a failure' if label == 'warnings' else ''})")
        lines += [f"  {item.kind}{item.where()}: {item.message}" for item in items[:show]]
        if len(items) > show:
            lines.append(f"  ... and {len(items) - show} more (write them all with --report FILE.csv)")
    return lines


def check_data_command(args: argparse.Namespace) -> int:
    from ipce.datasets.checks import check_annotations, format_report, write_report_csv

    report_path = getattr(args, "report", None)
    if getattr(args, "preferences", None) is not None:
        return _check_preferences(args, report_path)
    try:
        found, source = annotations_from_args(args)
    except DataError as err:
        if getattr(err, "kind", None) == "bad-option":
            raise
        return _unusable(err, report_path)
    workers = _workers(args)
    report = check_annotations(found, workers=workers,
                               progress=not getattr(args, "no_progress", False))
    print(format_report(report, source))
    if report_path:
        write_report_csv(report_path, report.problems, report.warnings)
        print(f"report: {report_path} ({len(report.problems)} problem row(s), {len(report.warnings)} warning(s))")
    return 0 if report.ok else 1
