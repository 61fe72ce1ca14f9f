"""Run exercise items for the answer sheet, resumably, and copy their results to docs/results/.

Each item runs its make target (the Makefile says what it trains) into a fixed directory,
``outputs/answers/<item>/answers[-laptop]``, with ``RESUME=1``: run again, it skips the jobs
that finished and continues the others from their checkpoints. After each item its results are
copied to ``docs/results/<item>/<scale>/`` (cnnlab.answers.collect) with an ``item.json`` that
says whether every job finished; an item whose copy is complete is not run again (``--force``
runs it anyway), so a machine that has only the repository skips what another one finished.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cnnlab.answers.collect import collect
from cnnlab.answers.items import ANALYZE, BIG, SMALL, Item
from cnnlab.runs.files import atomic_write

RUNS_DIR = Path("outputs") / "answers"  # relative to the project root
RESULTS_DIR = Path("docs") / "results"
ITEM_FILE = "item.json"
FULL, LAPTOP = "full", "laptop"
RUN_ID = "answers"


def item_scale(item: Item, scale: str) -> str:
    """The scale an item runs at: the 28 px items and the analyses have only the full one."""
    return FULL if item.family == SMALL or item.kind == ANALYZE else scale


def run_dir(item: Item, scale: str, runs_dir: Path = RUNS_DIR) -> Path:
    suffix = "-laptop" if item_scale(item, scale) == LAPTOP else ""
    return runs_dir / item.target / f"{RUN_ID}{suffix}"


def results_dir(item: Item, scale: str, results: Path = RESULTS_DIR) -> Path:
    return results / item.target / item_scale(item, scale)


def make_command(
    item: Item,
    scale: str,
    gpu: bool = False,
    runs_dir: Path = RUNS_DIR,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The make call of one item. ``gpu``: the big nets train with ``trainer=gpu`` (bf16
    autocast, as the course recipes were measured on a GPU; docs/performance.md)."""
    command = [
        "make", "--no-print-directory", item.target,
        f"EXERCISES_DIR={runs_dir}", f"RUN_ID={RUN_ID}", "RESUME=1",
        "QUICK=",  # an exported QUICK=1 would turn the answers into smoke runs
    ]  # fmt: skip
    command.append(f"SCALE={item_scale(item, scale)}")
    args = []
    if item.trains and item.seeds > 1:
        args.append("seed=" + ",".join(str(seed) for seed in range(item.seeds)))
    if gpu and item.trains and item.family == BIG:
        args.append("trainer=gpu")
    if item.trains:
        args += extra_args
    if args:
        command.append("ARGS=" + " ".join(args))
    return command


def sub_make_environment() -> dict[str, str]:
    """This environment without what a calling make hands its sub-makes (``make answers
    ARGS=...`` must not reach every item's training)."""
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def read_item_file(path: Path) -> dict:
    try:
        return json.loads((path / ITEM_FILE).read_text())
    except (OSError, ValueError):
        return {}


def is_complete(results: Path, item: Item, scale: str) -> bool:
    return bool(read_item_file(results_dir(item, scale, results)).get("complete"))


@dataclass
class Outcome:
    item: Item
    status: str  # ran, skipped, failed
    runs: int = 0
    seconds: float = 0.0


def order(items: Iterable[Item], scale: str) -> list[Item]:
    """Longest first at full scale (a GPU lent for a while fills it with what matters most),
    shortest first at laptop scale (on a CPU the answers come in as early as they can)."""
    return sorted(items, key=lambda i: i.cost, reverse=scale == FULL)


def run_items(
    root: Path,
    items: Sequence[Item],
    scale: str,
    force: bool = False,
    dry_run: bool = False,
    gpu: bool = False,
    runs_dir: Path = RUNS_DIR,
    results: Path = RESULTS_DIR,
    extra_args: Sequence[str] = (),
) -> list[Outcome]:
    """Run ``items`` in this order through make in ``root`` (the checkout: its Makefile), the
    runs below ``runs_dir``, their compact results below ``results`` (both relative to
    ``root`` unless absolute)."""
    results = root / results
    outcomes = []
    for number, item in enumerate(items, 1):
        command = make_command(item, scale, gpu, runs_dir, extra_args)
        head = f"[{number}/{len(items)}] {item.target}"
        dest = results_dir(item, scale, results)
        if not force and is_complete(results, item, scale):
            print(f"{head}: complete in {dest}, skipped", flush=True)
            outcomes.append(Outcome(item, "skipped"))
            continue
        print(f"{head}: {shlex.join(command)}", flush=True)
        if dry_run:
            continue
        start = time.perf_counter()
        code = subprocess.call(command, cwd=root, env=sub_make_environment())
        seconds = time.perf_counter() - start
        runs = collect(root / run_dir(item, scale, runs_dir), dest)
        info = {"complete": code == 0, "command": shlex.join(command)}
        with atomic_write(dest / ITEM_FILE, "w") as f:
            f.write(json.dumps(info) + "\n")
        status = "ran" if code == 0 else "failed"
        print(f"{head}: {status} ({runs} runs, {seconds:.0f} s) -> {dest}", flush=True)
        outcomes.append(Outcome(item, status, runs, seconds))
    return outcomes
