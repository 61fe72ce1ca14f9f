"""The answer sheet: docs/ANSWERS.md is what `make answers-sheet` writes from the committed
docs/results/ (no number in it typed by hand), and `cnnlab-answers run` runs an item through make
into a fixed directory, copies its results, and skips it once complete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cnnlab.answers.items import ITEMS
from cnnlab.answers.run import ITEM_FILE, RESULTS_DIR
from cnnlab.answers.sheet import FIGURES_DIR, SHEET, load, write_sheet
from cnnlab.resolvers import project_root
from conftest import TINY

ROOT = project_root()


def test_the_committed_sheet_is_what_the_committed_results_give(tmp_path: Path) -> None:
    shutil.copytree(ROOT / RESULTS_DIR, tmp_path / RESULTS_DIR)
    written = write_sheet(tmp_path)
    committed = ROOT / SHEET
    assert written.read_text() == committed.read_text(), (
        "docs/ANSWERS.md differs from what docs/results/ gives: run `make answers-sheet` and "
        "commit the sheet with the results"
    )
    figures = {p.name for p in (tmp_path / FIGURES_DIR).glob("*.png")}
    assert figures == {p.name for p in (ROOT / FIGURES_DIR).glob("*.png")}
    for name in figures:  # every figure the sheet shows is committed
        assert f"]({FIGURES_DIR.name}/{name})" in committed.read_text()


def test_every_baseline_names_one_row_of_its_results() -> None:
    """An item's baseline (the recipe's row) is a label its committed results have."""
    for item in ITEMS:
        for results in load(ROOT / RESULTS_DIR, item):
            if item.baseline is not None and len(results.groups) > 1:
                labels = [group.label for group in results.groups]
                assert item.baseline in labels, (item.target, labels)


def test_every_item_has_a_section() -> None:
    text = (ROOT / SHEET).read_text()
    for item in ITEMS:
        assert f"Run: `make {item.target}`" in text, item.target


def test_the_sheet_says_what_is_not_measured_and_what_is_quick(tmp_path: Path) -> None:
    runs = tmp_path / RESULTS_DIR / "lenet-pool" / "full"
    for job, pool in enumerate(("avg", "max")):
        (runs / str(job)).mkdir(parents=True)
        results = {
            "status": "ok",
            "test_acc": 0.6 + job / 100,
            "overrides": [f"model.pool={pool}", "++quick=true"],
            "config": {"quick": True, "dataset": {"name": "fashion_mnist", "val_size": 2000}},
        }
        (runs / str(job) / "results.json").write_text(json.dumps(results))
    (runs / ITEM_FILE).write_text(json.dumps({"complete": True}))
    text = write_sheet(tmp_path).read_text()
    pool = text.split("### I: average vs max pooling", 1)[1].split("\n### ", 1)[0]
    assert "Quick run" in pool and "answers nothing" in pool and "Best" not in pool
    kernel = text.split("### II: convolution window", 1)[1].split("\n### ", 1)[0]
    assert "Not measured yet" in kernel
    assert f"Items measured: 1 of {len(ITEMS)}." in text


def test_answers_run_is_resumable_and_skips_complete_items(tmp_path: Path) -> None:
    """`cnnlab-answers run lenet-pool` through make (on a tiny subset, --args, so it takes
    seconds): two variants x three seeds land in the results dir, a second call skips the
    complete item, --force runs make again, which skips the finished jobs."""
    tiny = " ".join([*TINY, "++trainer.limit_train_batches=2"])
    command = [
        sys.executable, "-m", "cnnlab.cli.answers", "run", "lenet-pool", "--no-sheet",
        "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
        "--args", tiny,
    ]  # fmt: skip
    env = {**os.environ, "QUICK": "1"}  # an exported QUICK=1 does not reach the answers

    def run(*extra: str) -> str:
        done = subprocess.run(
            [*command, *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    out = run()
    results = tmp_path / "results" / "lenet-pool" / "full"
    assert "ran (6 runs" in out
    assert json.loads((results / ITEM_FILE).read_text())["complete"] is True
    copied = sorted(p.relative_to(results).parts[0] for p in results.rglob("results.json"))
    assert copied == ["0", "1", "2", "3", "4", "5"]
    assert "complete in" in run() and "skipped" in run()
    sweep = tmp_path / "runs" / "lenet-pool" / "answers"
    assert (sweep / "report.md").is_file()
    written = {p: p.stat().st_mtime_ns for p in sweep.rglob("results.json")}
    assert "ran (6 runs" in run("--force")
    assert {p: p.stat().st_mtime_ns for p in sweep.rglob("results.json")} == written
