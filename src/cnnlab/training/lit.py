"""LitClassifier: the one training loop for every architecture.

It owns the loss (cross-entropy with label smoothing, plus auxiliary-head losses for GoogLeNet),
the metrics, the optimizer and scheduler built from config, and what goes to TensorBoard. The
model it wraps is a plain ``nn.Module`` that knows nothing of any of this.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.training.fast_forward import (
    CompiledTrainingForward,
    FullBatchTrainingForward,
    GraphedTrainingForward,
)
from cnnlab.training.timing import process_age

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
STAGES = ("train", "val", "test")
CHECKPOINT_KEY = "cnnlab_lit"
STEP_LOSS = "train/loss_step"  # history key: the training loss of every optimizer step


def scalar_name(class_name: str) -> str:
    """A class name as part of a metric name: "T-shirt/top" -> "T-shirt_top" (a slash would
    nest TensorBoard's groups), "Ankle boot" -> "Ankle_boot"."""
    return "".join(c if c.isalnum() or c in "-." else "_" for c in class_name)


class DivergedError(RuntimeError):
    """The training (or validation) loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, loss: float, stage: str = "training") -> None:
        # epoch is Lightning's 0-based index; the message counts as the progress lines do.
        super().__init__(f"{stage} loss became {loss} in epoch {epoch + 1}, step {step}")
        self.epoch, self.step, self.loss = epoch, step, loss


class EpochTotals:
    """One stage's running sums over an epoch: correct predictions and the sample-weighted loss,
    kept on the training device (no host sync per batch), and the number of samples.

    A handful of tensor ops per batch: torchmetrics' per-update bookkeeping (three metric
    objects) cost 0.14 ms a batch, and with it 2-3 % of a LeNet step on 2 CPU cores. The mean
    loss is sum(loss * n) / sum(n), exact over a short last batch; under DDP the sums of all
    ranks are added once, at the epoch's end, so every sample counts once.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.counted = 0
        self.correct: torch.Tensor | None = None
        self.loss_sum: torch.Tensor | None = None
        self.count = 0

    def update(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        n = y.shape[0]
        correct = (logits.argmax(dim=1) == y).sum()
        if self.correct is None or self.loss_sum is None:
            self.correct, self.loss_sum = correct, loss.detach().float() * n
        else:
            self.correct += correct
            self.loss_sum.add_(loss.detach(), alpha=n)
        self.count += n

    def compute(self, strategy: Any = None) -> dict[str, float]:
        """Accuracy and mean loss; with a Lightning strategy, over all its ranks."""
        if self.correct is None or self.loss_sum is None:  # no batch on this rank
            totals = torch.zeros(3)
        else:
            count = torch.tensor(float(self.count), device=self.loss_sum.device)
            totals = torch.stack((self.correct.float(), self.loss_sum, count))
        if strategy is not None:
            totals = strategy.reduce(totals.to(strategy.root_device), reduce_op="sum")
        correct, loss_sum, count = totals.tolist()
        self.counted = int(count)  # over all ranks: how many samples the numbers are over
        if not count:
            return {"acc": math.nan, "loss": math.nan}
        return {"acc": correct / count, "loss": loss_sum / count}


class ConfusionCounts:
    """The test pass's confusion matrix (rows: true class, columns: predicted), kept on the
    device as one flat bincount per batch: two small tensor ops, no host sync until the end.
    Test only: training and validation steps never pay for it. Under DDP the counts of all
    ranks are added once, at the end, like EpochTotals."""

    def __init__(self, num_classes: int | None = None) -> None:
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.counts: torch.Tensor | None = None

    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        n = logits.shape[1]
        counts = torch.bincount(y * n + logits.argmax(dim=1), minlength=n * n)
        if self.counts is None:
            self.num_classes, self.counts = n, counts
        else:
            self.counts += counts

    def compute(self, strategy: Any = None) -> list[list[int]] | None:
        """The matrix as lists (JSON-ready); with a Lightning strategy, summed over its ranks.
        None where no rank knows the number of classes (no batch, none given)."""
        n = self.num_classes
        if n is None:
            return None
        counts = self.counts if self.counts is not None else torch.zeros(n * n, dtype=torch.long)
        if strategy is not None:
            counts = strategy.reduce(counts.to(strategy.root_device), reduce_op="sum")
        return counts.view(n, n).tolist()


def example_input(datamodule: Any, strategy: Any) -> torch.Tensor | None:
    """One blank image as the model gets it (channels, size, memory format), or None.

    Lightning's model summary, printed as training starts, runs it through the model to show
    the input and output sizes and to count the FLOPs of one image (torch.utils.flop_counter);
    without it the summary says "Total FLOPs: 0". Not under FSDP: the summary calls the module
    directly, outside the FSDP wrapper that gathers the sharded parameters.
    """
    from lightning.pytorch.strategies import FSDPStrategy

    size = getattr(datamodule, "image_size", None)
    if size is None or isinstance(strategy, FSDPStrategy):
        return None
    x = torch.zeros(1, datamodule.in_channels, size, size)
    return x.to(memory_format=torch.channels_last) if datamodule.channels_last else x


class LitClassifier(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        label_smoothing: float = 0.0,
        aux_weight: float = 0.3,
        divergence_check_every: int | None = None,
        cuda_graphs: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        # cuda_graphs=true / compile=true: the full training batches run a recorded version of
        # the model (cnnlab.training.fast_forward); everything else runs self.model eagerly.
        self.fast_forward: FullBatchTrainingForward | None = None
        if cuda_graphs:
            self.fast_forward = GraphedTrainingForward(model)
        elif compile:
            self.fast_forward = CompiledTrainingForward(model)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.label_smoothing, self.aux_weight = label_smoothing, aux_weight
        self.totals = {stage: EpochTotals() for stage in STAGES}
        # The test pass's confusion matrix and the class names (from the datamodule, at setup).
        self.confusion = ConfusionCounts()
        self.classes: tuple[str, ...] | None = None
        self.test_confusion: list[list[int]] | None = None
        self._first_bad_step: torch.Tensor | None = None
        self.divergence_check_every = divergence_check_every
        # Process start to the first training step (results.json): imports, config, data and
        # model building, everything a user waits through. For the later jobs of a sweep (one
        # process) the clock starts with the job instead: run() sets job_started_at.
        self.startup_s: float | None = None
        self.job_started_at: float | None = None
        self.best_val_acc = 0.0
        self.history: dict[str, list[float]] = {}
        self._train_images = 0
        self._train_seconds = 0.0
        self._val_seconds = 0.0
        self._val_start = 0.0
        # None until the epoch's first batch: Lightning does not call on_train_epoch_start
        # when it restarts a run inside an epoch (a SIGTERM checkpoint).
        self._epoch_start: float | None = None
        self._last_batch_end = self._batch_started = 0.0
        self.test_images = 0  # images of the last test pass, all ranks
        # Every training step's loss, kept on the device and read once per epoch (no host sync
        # per step): history["train/loss_step"] draws early training and short runs.
        self._step_losses: list[torch.Tensor] = []
        self._epoch_images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def setup(self, stage: str) -> None:
        # The weights' memory format follows the batches': NHWC convolutions are about twice as
        # fast on CPU (oneDNN) and use tensor cores on GPUs.
        # L-BFGS flattens gradients with .view(), which needs the default (NCHW) layout.
        datamodule = getattr(self.trainer, "datamodule", None)
        lbfgs = getattr(self.optimizer_factory, "func", self.optimizer_factory) is torch.optim.LBFGS
        if getattr(datamodule, "channels_last", False) and not lbfgs:
            self.model.to(memory_format=torch.channels_last)
        self.example_input_array = example_input(datamodule, self.trainer.strategy)
        classes = getattr(datamodule, "classes", None)
        if classes:
            self.classes = tuple(classes)
            # Known before any batch: a DDP rank without a test batch still adds its zeros.
            self.confusion.num_classes = len(self.classes)

    # --- one step
    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        out = self.fast_forward(x) if self.fast_forward is not None else self.model(x)
        if isinstance(out, tuple):  # auxiliary classifiers (GoogLeNet): extra weighted losses
            logits, aux_logits = out
            loss = self._loss(logits, y) + sum(
                self.aux_weight * self._loss(a, y) for a in aux_logits
            )
        else:
            logits, loss = out, self._loss(out, y)
        self._check_finite(loss, batch_idx, self.global_step)
        # Metrics are updated once per batch, in on_train_batch_end: L-BFGS calls this step
        # several times per batch (line-search probes), and only the last call counts.
        self._last_train = (logits.detach(), y, loss.detach())
        return loss

    def on_train_batch_start(self, batch: tuple, batch_idx: int) -> None:
        if self.startup_s is None:
            if self.job_started_at is not None:
                age: float | None = time.perf_counter() - self.job_started_at
            else:
                age = process_age()
            self.startup_s = round(age, 2) if age is not None else None
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, outputs: object, batch: tuple, batch_idx: int) -> None:
        if self._epoch_start is None:  # the first batch of a run resumed inside an epoch
            self._epoch_start = self._batch_started
        # Counted here, not in training_step: L-BFGS runs the step several times per batch.
        self.totals["train"].update(*self._last_train)
        self._step_losses.append(self._last_train[2])
        self._epoch_images += batch[1].shape[0]
        if self.device.type == "cuda" and batch_idx + 1 == self.trainer.num_training_batches:
            # The GPU runs behind the Python loop: wait for the epoch's last step, or the epoch's
            # images/s would count work that is still queued.
            torch.cuda.synchronize(self.device)
        self._last_batch_end = time.perf_counter()

    def _check_finite(self, loss: torch.Tensor, batch_idx: int, global_step: int) -> None:
        """Raise DivergedError once the loss has been NaN/inf. The first bad step is recorded on
        the loss's device and read every ``divergence_check_every`` steps (default: every step
        on CPU, where reading is free; every 25 on a GPU, so the loop never waits for the GPU
        just to look at one number)."""
        every = self.divergence_check_every or (1 if loss.device.type == "cpu" else 25)
        if every == 1 and loss.device.type == "cpu":
            # Read at once: one Python float instead of a flag kept in four tensor ops.
            if self._first_bad_step is None and not math.isfinite(loss.item()):
                self._first_bad_step = torch.tensor(global_step)
        else:
            bad = ~torch.isfinite(loss.detach())
            step = torch.full((), global_step, device=loss.device)
            first = self._first_bad_step
            if first is None:
                first = torch.full((), -1, device=loss.device)
            self._first_bad_step = torch.where(bad & (first < 0), step, first)
        if (batch_idx + 1) % every == 0:
            self._raise_if_diverged()

    def _raise_if_diverged(self) -> None:
        step = int(self._first_bad_step) if self._first_bad_step is not None else -1
        diverged = step >= 0
        if self._trainer is not None and self.trainer.world_size > 1:
            # Every rank must stop together, or the healthy ones wait for the stopped one forever.
            diverged = self.trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            raise DivergedError(self.current_epoch, step, float("nan"))

    def _eval_step(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        logits = self.model(x)
        self.totals[stage].update(logits, y, self._loss(logits, y))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.totals["test"].update(logits, y, self._loss(logits, y))
        self.confusion.update(logits, y)

    # --- epoch ends: compute, log, remember
    def _finish(self, stage: str) -> dict[str, float]:
        totals = self.totals[stage]
        summary = totals.compute(self.trainer.strategy if self._trainer is not None else None)
        if stage == "test":
            self.test_images = totals.counted
        totals.reset()
        values = {f"{stage}/loss": summary["loss"], f"{stage}/acc": summary["acc"]}
        # Equal on every rank already (summed over ranks above); sync_dist tells Lightning.
        self.log_dict(values, sync_dist=True)
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)
        return values

    def on_train_epoch_start(self) -> None:
        self._epoch_images = 0
        self._epoch_start = self._last_batch_end = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        self._raise_if_diverged()
        # Up to the last training batch only: validation runs inside the epoch in Lightning 2.
        seconds = self._last_batch_end - (self._epoch_start or self._last_batch_end)
        self._epoch_start = None
        self._train_seconds += seconds
        # All ranks see the same number of images; the global rate is that times world size.
        images = self._epoch_images * self.trainer.world_size
        self._train_images += images
        self.log("train/images_per_s", images / max(seconds, 1e-9), sync_dist=True)
        self._finish("train")
        self.flush_step_losses()

    def on_validation_epoch_start(self) -> None:
        self._val_start = time.perf_counter()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        values = self._finish("val")  # float(compute()) waits for the device: the time is whole
        self._val_seconds += time.perf_counter() - self._val_start
        if not math.isfinite(values["val/loss"]):
            # Raised before the checkpoint callbacks run: a NaN model is never kept as "best".
            loss = values["val/loss"]
            raise DivergedError(self.current_epoch, self.global_step, loss, "validation")
        self.best_val_acc = max(self.best_val_acc, values["val/acc"])
        self.log("hp_metric", self.best_val_acc, sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self.confusion.reset()
        self.test_confusion = None

    def on_test_epoch_end(self) -> None:
        values = self._finish("test")
        self.test_confusion = self.confusion.compute(
            self.trainer.strategy if self._trainer is not None else None
        )
        self.confusion.reset()
        if self.test_confusion is not None:
            self._log_confusion(self.test_confusion, values["test/acc"])

    def class_names(self) -> tuple[str, ...]:
        """The datamodule's class names, or "0", "1", ... without one."""
        if self.classes is not None:
            return self.classes
        n = self.confusion.num_classes or 0
        return tuple(str(i) for i in range(n))

    def _log_confusion(self, matrix: list[list[int]], acc: float) -> None:
        """Per-class accuracy as scalars (test/acc_<class>) and, for TensorBoard, the figure."""
        from cnnlab.analysis.confusion import confusion_figure, per_class_accuracy

        names = self.class_names()
        per_class = per_class_accuracy(matrix, names)
        scalars = {
            f"test/acc_{scalar_name(name)}": value
            for name, value in per_class.items()
            if value is not None
        }
        self.log_dict(scalars, sync_dist=True)  # equal on every rank: the counts are summed
        if self._trainer is None or not self.trainer.is_global_zero:
            return
        # Every logger that takes figures (TensorBoard's SummaryWriter), wherever it is listed.
        writers = [getattr(logger, "experiment", None) for logger in self.loggers]
        writers = [w for w in writers if hasattr(w, "add_figure")]
        if not writers:
            return
        images = sum(sum(row) for row in matrix)
        fig = confusion_figure(matrix, names, f"test: acc {acc:.4f} on {images:,} images")
        for writer in writers:
            writer.add_figure("test/confusion_matrix", fig, self.global_step, close=False)

    # What makes results.json whole after a resume (all epochs' history, best val accuracy,
    # throughput counters): Lightning's own checkpoint state does not hold it.
    def flush_step_losses(self) -> None:
        """Move the step losses kept on the device into ``history["train/loss_step"]``."""
        if self._step_losses:
            losses = torch.stack(self._step_losses).float().tolist()
            self.history.setdefault(STEP_LOSS, []).extend(losses)
            self._step_losses = []

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.flush_step_losses()  # a mid-epoch (SIGTERM) checkpoint keeps the steps done so far
        checkpoint[CHECKPOINT_KEY] = {
            "history": self.history,
            "best_val_acc": self.best_val_acc,
            "train_images": self._train_images,
            "train_seconds": self._train_seconds,
            "val_seconds": self._val_seconds,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints of compile=true runs before cnnlab.training.fast_forward held the compiled
        # wrapper's parameter names (model._orig_mod.<name>); the model is never wrapped now.
        state_dict = checkpoint.get("state_dict") or {}
        if any("._orig_mod." in key for key in state_dict):
            checkpoint["state_dict"] = {
                key.replace("._orig_mod.", "."): value for key, value in state_dict.items()
            }
        state = checkpoint.get(CHECKPOINT_KEY)
        if state:
            self.history = state["history"]
            self.best_val_acc = state["best_val_acc"]
            self._train_images = state["train_images"]
            self._train_seconds = state["train_seconds"]
            self._val_seconds = state.get("val_seconds", 0.0)

    @property
    def train_seconds(self) -> float:
        """Seconds of training, first to last batch of each epoch (all epochs of the run)."""
        return self._train_seconds

    @property
    def val_seconds(self) -> float:
        return self._val_seconds

    @property
    def train_images_per_s(self) -> float:
        return self._train_images / self._train_seconds if self._train_seconds else 0.0

    @property
    def validation_cost_pct(self) -> float | None:
        """Time spent validating, as a percentage of the time spent training (None: no training
        or no validation)."""
        if not self._train_seconds or not self._val_seconds:
            return None
        return 100.0 * self._val_seconds / self._train_seconds

    # --- optimisation
    def configure_optimizers(self) -> torch.optim.Optimizer | dict:
        optimizer = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
