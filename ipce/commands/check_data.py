"""`ipce check-data`: read a dataset's annotations, decode every image, print a summary.

Every problem is reported in one run: bad rows, bad images, and duplicated images
(warnings). Exit status 0 when every record is usable (warnings allowed), 1 when
any is not or the annotation file itself cannot be read. `--report FILE.csv` gets
one `path,row,severity,problem` row per problem and warning.
"""
from __future__ import annotations

import argparse

from ipce.commands.flags import annotations_from_args
from ipce.errors import DataError, IpceError


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
    workers = 2 if getattr(args, "workers", None) is None else args.workers  # 0: decode in this process
    if workers < 0:
        raise IpceError(f"--workers {workers}: must be 0 or more")
    report = check_annotations(found, workers=workers,
                               progress=not getattr(args, "no_progress", False))
    print(format_report(report, source))
    if report_path:
        write_report_csv(report_path, report.problems, report.warnings)
        print(f"report: {report_path} ({len(report.problems)} problem row(s), {len(report.warnings)} warning(s))")
    return 0 if report.ok else 1
