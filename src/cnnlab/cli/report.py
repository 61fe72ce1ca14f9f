"""``cnnlab-report`` (cnnlab.cli.report): one table and one figure for a set of runs.

    cnnlab-report outputs/exercises/lenet-pool/latest     # what `make lenet-pool` made
    cnnlab-report outputs/multirun/<date>/<time>          # any sweep
    cnnlab-report outputs/runs/<date>/<time>              # a single run

Writes ``report.md`` and ``curves.png`` into the directory (cnnlab.runs.report says what is in
them) and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cnnlab.runs.report import ReportError, build_report, laptop_note, quick_note


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cnnlab-report",
        description="Summarise the runs below a run or sweep directory: report.md, curves.png.",
    )
    parser.add_argument("directory", type=Path, help="a run dir or a sweep (multirun) dir")
    parser.add_argument("--out", type=Path, help="where to write (default: the directory)")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.directory, args.out)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    runs = [run for group in report.groups for run in group.runs]
    for note in (quick_note(runs), laptop_note(runs)):
        if note:
            print(note.replace("**", ""))
    print(report.table)
    print(f"\nreport:      {report.report_path}")
    if report.curves_path:
        print(f"curves:      {report.curves_path}")
    print(f"TensorBoard: make tensorboard DIR={args.directory.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
