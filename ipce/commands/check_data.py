"""`ipce check-data`: read a dataset's annotations, decode every image, print a summary.

Exit status 0 when every record is usable, 1 when any is not (or the annotations
themselves are bad). `--report FILE.csv` gets one `path,row,problem` row per problem.
"""
from __future__ import annotations

import argparse

from ipce.errors import DataError, IpceError


def records_from_args(args: argparse.Namespace):
    """Records for the `--preset NAME` or `--annotations FILE --images DIR` form; returns (records, description)."""
    from ipce.datasets.sources import read_custom, read_dataset

    preset = getattr(args, "preset", None)
    annotations = getattr(args, "annotations", None)
    if preset and annotations:
        raise IpceError("--preset and --annotations: give one of them, not both")
    if preset:
        subset = getattr(args, "subset", None) or "train"
        records = read_dataset(preset, getattr(args, "data_root", None) or "data", subset=subset,
                               target=getattr(args, "target", None))
        return records, f"{preset} ({subset}) under {getattr(args, 'data_root', None) or 'data'}"
    if annotations:
        images = getattr(args, "images", None)
        if not images:
            raise IpceError("--images: required with --annotations (the folder the image names are relative to)")
        target_col = getattr(args, "target_col", None)
        records = read_custom(annotations, images, image_col=getattr(args, "image_col", None) or "image",
                              prompt_col=getattr(args, "prompt_col", None) or "prompt",
                              target_col=target_col or "mos", require_target=target_col is not None)
        return records, f"{annotations} (images in {images})"
    raise IpceError("no data given: pass --preset NAME (with --data-root DIR) or --annotations FILE --images DIR")


def check_data_command(args: argparse.Namespace) -> int:
    from ipce.datasets.checks import CheckReport, Problem, check_records, format_report, write_report_csv

    report_path = getattr(args, "report", None)
    try:
        records, source = records_from_args(args)
    except DataError as err:
        if getattr(err, "kind", None) == "bad-option":
            raise
        problem = Problem(path=getattr(err, "path", None) or "", row=getattr(err, "row", None),
                          kind=getattr(err, "kind", None) or "annotation", message=str(err))
        print(f"annotations: unusable ({problem.kind})")
        print(f"  {problem.message}")
        if report_path:
            write_report_csv(report_path, [problem])
            print(f"report: {report_path}")
        return 1
    report: CheckReport = check_records(records, workers=getattr(args, "workers", 2) or 2,
                                        progress=not getattr(args, "no_progress", False))
    print(format_report(report, source))
    if report_path:
        write_report_csv(report_path, report.problems)
        print(f"report: {report_path} ({len(report.problems)} problem row(s))")
    return 0 if report.ok else 1
