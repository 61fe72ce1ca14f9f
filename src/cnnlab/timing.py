"""Start-up time of a run: from the process's start to its first training step."""

from __future__ import annotations

import os
import time
from typing import Any

import lightning as L


def process_start_time() -> float | None:
    """The Unix time this process started (Linux: /proc), or None where that is unknown."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22 (starttime, clock ticks since boot); the command name in field 2 may hold
            # spaces, so count from the closing parenthesis.
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + start_ticks / os.sysconf("SC_CLK_TCK")


class StartupTimer(L.Callback):
    """Records ``startup_s`` (process start to the first training step) for results.json:
    imports, config, data loading and model building, everything a user waits through."""

    def __init__(self) -> None:
        self.startup_s: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.startup_s is None:
            started = process_start_time()
            self.startup_s = round(time.time() - started, 2) if started else None

    def results_extras(self) -> dict[str, Any]:
        return {"startup_s": self.startup_s}
