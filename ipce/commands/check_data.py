"""`ipce check-data`: read a dataset's annotations, decode every image, print a summary.

Every problem is reported in one run: bad rows, bad images, and duplicated images
(warnings). Exit status 0 when every record is usable (warnings allowed), 1 when
any is not or the annotation file itself cannot be read. `--report FILE.csv` gets
one `path,row,severity,problem` row per problem and warning.
"""
from __future__ import annotations

import argparse

from ipce.errors import DataError, IpceError


def annotations_from_args(args: argparse.Namespace):
    """What the `--preset NAME` or `--annotations FILE --images DIR` form reads, with bad rows collected;
    returns (Annotations, description)."""
    from ipce.datasets.sources import load_custom, load_dataset

    preset = getattr(args, "preset", None)
    annotations = getattr(args, "annotations", None)
    duplicates = getattr(args, "duplicates", None) or "keep"
    if preset and annotations:
        raise IpceError("--preset and --annotations: give one of them, not both")
    if preset:
        subset = getattr(args, "subset", None) or "train"
        root = getattr(args, "data_root", None) or "data"
        found = load_dataset(preset, root, subset=subset, target=getattr(args, "target", None),
                             duplicates=duplicates)
        return found, f"{preset} ({subset}) under {root}"
    if annotations:
        images = getattr(args, "images", None)
        if not images:
            raise IpceError("--images: required with --annotations (the folder the image names are relative to)")
        target_col = getattr(args, "target_col", None)
        found = load_custom(annotations, images, image_col=getattr(args, "image_col", None) or "image",
                            prompt_col=getattr(args, "prompt_col", None) or "prompt",
                            target_col=target_col or "mos", require_target=target_col is not None,
                            duplicates=duplicates)
        return found, f"{annotations} (images in {images})"
    raise IpceError("no data given: pass --preset NAME (with --data-root DIR) or --annotations FILE --images DIR")


def records_from_args(args: argparse.Namespace):
    """The usable records of `annotations_from_args` (a bad row raises `DataError`); returns (records, description)."""
    found, source = annotations_from_args(args)
    return found.usable(), source


def check_data_command(args: argparse.Namespace) -> int:
    from ipce.datasets.checks import check_annotations, format_report, write_report_csv
    from ipce.datasets.problems import Problem

    report_path = getattr(args, "report", None)
    try:
        found, source = annotations_from_args(args)
    except DataError as err:
        if getattr(err, "kind", None) == "bad-option":
            raise
        problem = Problem.of(err)
        print(f"annotations: unusable ({problem.kind})")
        print(f"  {problem.message}")
        if report_path:
            write_report_csv(report_path, [problem])
            print(f"report: {report_path}")
        return 1
    report = check_annotations(found, workers=getattr(args, "workers", 2) or 2,
                               progress=not getattr(args, "no_progress", False))
    print(format_report(report, source))
    if report_path:
        write_report_csv(report_path, report.problems, report.warnings)
        print(f"report: {report_path} ({len(report.problems)} problem row(s), {len(report.warnings)} warning(s))")
    return 0 if report.ok else 1
