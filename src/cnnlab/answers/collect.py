"""Copy what an item's runs measured into docs/results/, small enough to commit.

``docs/results/<item>/<scale>/`` mirrors the item's directory below ``outputs/answers/``: one
``results.json`` per run at the same relative path (so cnnlab.runs.report reads it as it reads a
sweep), without checkpoints, TensorBoard files or the paths of the machine that ran it, with
the history rounded to five significant digits; and the files the item's analysis tools wrote
(analysis.json/.md, inception_residual.*, the activation figures).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from cnnlab.runs.files import atomic_write
from cnnlab.runs.results import RESULTS_FILE, read_results

# Files of the analysis tools an item runs beside (or instead of) training, relative to its dir.
EXTRA_FILES = (
    "analysis.json",
    "analysis.md",
    "inception_residual.json",
    "inception_residual.md",
    "visualize/activations_*.png",
)
# Machine-specific parts of a run's results: where it wrote its files.
DROPPED_RESULTS = ("tensorboard_dir",)
DROPPED_CONFIG = ("paths", "logger", "hydra")
SIGNIFICANT_DIGITS = 5


def _round(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def compact_results(results: dict[str, Any]) -> dict[str, Any]:
    """A run's results.json as docs/results keeps it (see the module docstring)."""
    compact = {key: value for key, value in results.items() if key not in DROPPED_RESULTS}
    config = dict(compact.get("config") or {})
    for key in DROPPED_CONFIG:
        config.pop(key, None)
    if isinstance(config.get("dataset"), dict):
        config["dataset"] = {k: v for k, v in config["dataset"].items() if k != "root"}
    if config:
        compact["config"] = config
    history = compact.get("history")
    if isinstance(history, dict):
        compact["history"] = {metric: _round(values) for metric, values in history.items()}
    return compact


def collect(item_dir: Path, dest: Path) -> int:
    """Replace ``dest`` by the compact results of the runs below ``item_dir`` and its analysis
    files; return the number of runs copied. Written beside ``dest`` first and renamed over it,
    so a killed collect leaves the old copy."""
    runs = sorted(p.parent for p in item_dir.rglob(RESULTS_FILE))
    extras = sorted({p for pattern in EXTRA_FILES for p in item_dir.glob(pattern)})
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    copied = 0
    for run_dir in runs:
        results = read_results(run_dir)
        if results is None:
            continue
        target = partial / run_dir.relative_to(item_dir) / RESULTS_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target, "w") as f:  # one line: data, read by programs
            f.write(json.dumps(compact_results(results), separators=(",", ":")) + "\n")
        copied += 1
    for path in extras:
        target = partial / path.relative_to(item_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target) as f:
            f.write(path.read_bytes())
    partial.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    partial.rename(dest)
    return copied
