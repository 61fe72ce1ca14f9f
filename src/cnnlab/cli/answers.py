"""``cnnlab-answers``: run the course's exercise items and write docs/ANSWERS.md.

    cnnlab-answers run                      # every item at this machine's scale, then the sheet
    cnnlab-answers run lenet-pool vgg-depth # some items
    cnnlab-answers run --scale full         # the big nets at their course recipes (a GPU)
    cnnlab-answers sheet                    # the sheet alone, from docs/results/ (no training)

``make answers`` and ``make answers-sheet`` call these. What an item runs is its make target
(Makefile); cnnlab.answers says how the sheet presents it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from cnnlab.answers.items import ITEMS, item
from cnnlab.answers.run import FULL, LAPTOP, RESULTS_DIR, RUNS_DIR, order, run_items
from cnnlab.answers.sheet import write_sheet
from cnnlab.devices import gpu_available
from cnnlab.resolvers import project_root


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cnnlab-answers", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run items (resumably), then write the sheet")
    run.add_argument("items", nargs="*", help="make targets of items (default: all)")
    run.add_argument(
        "--scale",
        choices=("auto", FULL, LAPTOP),
        default="auto",
        help="the big nets' scale: full (course recipes), laptop, or auto (full with a GPU)",
    )
    run.add_argument("--force", action="store_true", help="run items whose results are complete")
    run.add_argument("--dry-run", action="store_true", help="print the commands only")
    run.add_argument("--runs-dir", type=Path, default=RUNS_DIR, help="where the items run")
    run.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where their results are copied"
    )
    run.add_argument("--no-sheet", action="store_true", help="do not write the sheet after")
    run.add_argument(
        "--args",
        default="",
        help="more cnnlab-train overrides for every training item (the sheet shows the settings "
        "each run had)",
    )
    commands.add_parser("sheet", help="write docs/ANSWERS.md from docs/results/ (no training)")
    args = parser.parse_args(argv)

    root = project_root()
    if args.command == "run":
        try:
            chosen = [item(name) for name in args.items] if args.items else list(ITEMS)
        except KeyError as err:
            print(f"error: {err.args[0]}", file=sys.stderr)
            return 2
        gpu = gpu_available()
        scale = (FULL if gpu else LAPTOP) if args.scale == "auto" else args.scale
        print(f"cnnlab-answers: {len(chosen)} items, big nets at {scale} scale", flush=True)
        outcomes = run_items(
            root, order(chosen, scale), scale, args.force, args.dry_run, gpu,
            args.runs_dir, args.results_dir, shlex.split(args.args),
        )  # fmt: skip
        if args.dry_run:
            return 0
        failed = [o.item.target for o in outcomes if o.status == "failed"]
        if not args.no_sheet:
            print(f"sheet: {write_sheet(root)}")
        if failed:
            print(f"not every job finished in: {', '.join(failed)} (run again to continue)")
        return 1 if failed else 0
    print(f"sheet: {write_sheet(root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
