"""Training-time diagnostics as Lightning callbacks, switched on by the ``diagnostics`` config.

A callback that has something for ``results.json`` implements ``results_extras() -> dict``;
the runner merges those into the run's results.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

log = logging.getLogger("cnnlab")


class EpochLog(L.Callback):
    """One line per epoch in the run's log (console and train.log): the epoch's metrics and
    speed, what the progress bar showed, kept where a log file or a cluster's job output has it."""

    def __init__(self) -> None:
        self.logged_epochs = 0

    # Written when the next epoch starts or training ends: at on_train_epoch_end, callbacks run
    # before the LightningModule's own hook, which computes the epoch's train/* metrics.
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_finished_epoch(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_finished_epoch(trainer)

    def log_finished_epoch(self, trainer: L.Trainer) -> None:
        finished = trainer.current_epoch  # epochs done so far (a resumed run starts above 0)
        if finished <= self.logged_epochs or not trainer.is_global_zero:
            self.logged_epochs = max(self.logged_epochs, finished)
            return
        self.logged_epochs = finished
        metrics = trainer.callback_metrics
        parts = [
            f"{name}={float(metrics[name]):.4f}"
            for name in ("train/loss", "train/acc", "val/loss", "val/acc")
            if name in metrics
        ]
        if "train/images_per_s" in metrics:
            parts.append(f"{float(metrics['train/images_per_s']):,.0f} images/s")
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        log.info(f"epoch {finished}/{epochs}: {', '.join(parts)}")


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
        return {
            "peak_memory_mb": round(self.peak_mb(), 1),
            "peak_memory_kind": "cuda_max_allocated"
            if self.device_type == "cuda"
            else "process_peak_rss",
        }


HISTOGRAM_BINS = 64


class GradientNorms(L.Callback):
    """Per-layer gradient norms, the vanishing gradient made visible: with sigmoid in a deep
    plain net the first layers' norms are orders of magnitude below the last ones', with ReLU
    (or batch norm, or residual connections) much less so.

    Every ``every_n_steps`` optimizer steps, for every layer with parameters (in definition
    order, input to output), the L2 norm of all its parameters' gradients goes to TensorBoard
    as ``grad_norm/<layer>`` and, with ``histograms``, their distribution as ``grad/<layer>``.
    ``results.json`` gets the mean norm per layer over the logged steps (``grad_norms``).
    """

    def __init__(self, every_n_steps: int = 50, histograms: bool = True) -> None:
        if every_n_steps < 1:
            raise ValueError(
                f"diagnostics.grad_norms_every_n_steps must be >= 1, got {every_n_steps}"
            )
        self.every_n_steps = every_n_steps
        self.histograms = histograms
        self.norms: dict[str, list[float]] = {}
        self.steps: list[int] = []

    @staticmethod
    def layers(pl_module: L.LightningModule) -> Iterator[tuple[str, list[torch.Tensor]]]:
        """(layer name, its own trainable parameters), named as in the model (``features.0``)."""
        model = getattr(pl_module, "model", pl_module)  # LitClassifier wraps the nn.Module
        for name, module in model.named_modules():
            params = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if params:
                yield name.replace("_orig_mod.", "") or type(module).__name__, params

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        step = trainer.global_step
        # L-BFGS calls this once per closure evaluation: log the first of each step only.
        if step % self.every_n_steps or (self.steps and self.steps[-1] == step):
            return
        writers = (
            [
                logger.experiment
                for logger in trainer.loggers
                if hasattr(logger.experiment, "add_scalar")
            ]
            if trainer.is_global_zero
            else []
        )
        self.steps.append(step)
        for name, params in self.layers(pl_module):
            grads = [p.grad.detach() for p in params if p.grad is not None]
            if not grads:
                continue
            norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
            self.norms.setdefault(name, []).append(norm)
            for writer in writers:
                writer.add_scalar(f"grad_norm/{name}", norm, step)
                if self.histograms:
                    _add_histogram(writer, f"grad/{name}", grads, step)

    def results_extras(self) -> dict[str, Any]:
        return {
            "grad_norms": {
                "every_n_steps": self.every_n_steps,
                "logged_steps": len(self.steps),
                "mean_per_layer": {
                    name: sum(values) / len(values) for name, values in self.norms.items()
                },
            }
        }


def _add_histogram(writer: Any, tag: str, grads: list[torch.Tensor], step: int) -> None:
    """Histogram computed on the training device (torch.histc): a 100M-weight FC layer's
    gradients never travel to the CPU."""
    values = torch.cat([g.flatten() for g in grads]).float()
    low, high = float(values.min()), float(values.max())
    if low == high:  # histc needs a non-empty range
        low, high = low - 1e-12, high + 1e-12
    counts = torch.histc(values, bins=HISTOGRAM_BINS, min=low, max=high)
    limits = torch.linspace(low, high, HISTOGRAM_BINS + 1)[1:]
    writer.add_histogram_raw(
        tag,
        min=low,
        max=high,
        num=values.numel(),
        sum=float(values.sum()),
        sum_squares=float(values.square().sum()),
        bucket_limits=limits.tolist(),
        bucket_counts=counts.cpu().tolist(),
        global_step=step,
    )


def diagnostic_callbacks(diagnostics: DictConfig | dict | None) -> list[L.Callback]:
    """The callbacks the ``diagnostics`` config switches on."""
    diagnostics = diagnostics or {}
    callbacks: list[L.Callback] = []
    if diagnostics.get("peak_memory", True):
        callbacks.append(PeakMemory())
    if diagnostics.get("grad_norms", False):
        callbacks.append(
            GradientNorms(
                every_n_steps=diagnostics.get("grad_norms_every_n_steps", 50),
                histograms=diagnostics.get("grad_histograms", True),
            )
        )
    return callbacks
