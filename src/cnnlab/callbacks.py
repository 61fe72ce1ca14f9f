"""Training-time diagnostics as Lightning callbacks, switched on by the ``diagnostics`` config.

A callback that has something for ``results.json`` implements ``results_extras() -> dict``;
the runner merges those into the run's results.
"""

from __future__ import annotations

import resource
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig


class PeakMemory(L.Callback):
    """Peak memory of the run: CUDA's peak allocation on a GPU, the process's peak RSS on CPU."""

    def __init__(self) -> None:
        self.device_type = "cpu"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.device_type = trainer.strategy.root_device.type
        if self.device_type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.strategy.root_device)

    def peak_mb(self) -> float:
        if self.device_type == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes

    def results_extras(self) -> dict[str, Any]:
        return {"peak_memory_mb": round(self.peak_mb(), 1), "peak_memory_kind":
                "cuda_max_allocated" if self.device_type == "cuda" else "process_peak_rss"}


def diagnostic_callbacks(diagnostics: DictConfig | None) -> list[L.Callback]:
    """The callbacks the ``diagnostics`` config switches on."""
    diagnostics = diagnostics or {}
    callbacks: list[L.Callback] = []
    if diagnostics.get("peak_memory", True):
        callbacks.append(PeakMemory())
    return callbacks
