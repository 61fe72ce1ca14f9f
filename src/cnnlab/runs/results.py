"""results.json, the record of one run: its file name, its statuses, reading and writing it, the
record a failed run leaves, and the summary printed at a run's end.

Statuses: ``ok`` and ``diverged`` (FINISHED: a deterministic rerun would end the same way),
``interrupted`` (SIGTERM; it continues with ``resume=``), ``failed`` (an error; traceback.txt
beside it). Readers also see ``missing`` (no file: the job died before writing one, or still
runs) and ``unreadable``. A diverged run records ``diverged_epoch``, 0-based as Lightning
counts (``trainer.current_epoch``), and ``diverged_step``; text for people says
:func:`epoch_text`, counted from 1 as the progress lines ("epoch 1/10") are.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from cnnlab.errors import USER_ERRORS, RunDirError
from cnnlab.runs.files import atomic_write

if TYPE_CHECKING:
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from cnnlab.training.lit import LitClassifier

log = logging.getLogger("cnnlab")
RESULTS_FILE = "results.json"
TRACEBACK_FILE = "traceback.txt"
FINISHED = ("ok", "diverged")


def epoch_text(epoch: Any) -> str:
    """``epoch 3`` for the 0-based epoch index 2: epochs as the training log counts them."""
    if isinstance(epoch, int) and not isinstance(epoch, bool):
        return f"epoch {epoch + 1}"
    return f"epoch {epoch}"  # a results.json is data: show what it holds


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """A run's results, or None where it has no results.json. A file that is not JSON (or not
    a JSON object) reads as status ``unreadable``, with the reason in ``error``."""
    path = Path(run_dir) / RESULTS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        return {"status": "unreadable", "error": f"cannot read {path.name}: {err}"}
    try:
        results = json.loads(text)
    except ValueError as err:
        return {"status": "unreadable", "error": f"cannot read {path.name}: {err}"}
    if not isinstance(results, dict):
        return {"status": "unreadable", "error": f"{path.name} is not a JSON object"}
    return results


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write ``data`` as JSON to ``path`` whole or not at all (cnnlab.runs.files.atomic_write):
    a killed process leaves the old file (or none), never half of a new one."""
    with atomic_write(path, "w") as f:
        f.write(json.dumps(data, indent=2, default=str) + "\n")
    return path


def write_results(run_dir: Path, results: dict[str, Any]) -> Path:
    return write_json_atomic(Path(run_dir) / RESULTS_FILE, results)


def tensorboard_logger(trainer: L.Trainer) -> TensorBoardLogger | None:
    """The run's TensorBoard logger, wherever logger=[...] lists it, or None."""
    from lightning.pytorch.loggers import TensorBoardLogger

    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def training_results(
    cfg: DictConfig,
    trainer: L.Trainer,
    lit: LitClassifier,
    *,
    started: float,
    params: int,
    overrides: list[str],
) -> dict[str, Any]:
    """What a finished (or diverged, or interrupted) training run records, from its Trainer and
    LitClassifier. The caller adds the status and how the run ended. ``params`` is counted before
    training (FSDP shards the parameters during it)."""
    from cnnlab.analysis.confusion import per_class_accuracy
    from cnnlab.devices import device_description  # torch: not for the readers of results
    tensorboard = tensorboard_logger(trainer)
    lit.flush_step_losses()  # a run that diverged mid-epoch: its last steps are the story

    last = {key: values[-1] for key, values in lit.history.items() if values}
    confusion = lit.test_confusion  # None where the run did not test
    results: dict[str, Any] = dict(
        test_acc=last.get("test/acc"),
        test_loss=last.get("test/loss"),
        val_acc=lit.best_val_acc if "val/acc" in last else None,
        train_loss=last.get("train/loss"),
        train_acc=last.get("train/acc"),
        epochs_completed=trainer.current_epoch,
        params=params,
        train_images_per_s=round(lit.train_images_per_s, 1),
        validation_cost_pct=(
            round(lit.validation_cost_pct, 1) if lit.validation_cost_pct is not None else None
        ),
        startup_s=lit.startup_s,
        wall_s=round(time.perf_counter() - started, 2),
        # Where the wall time went (the rest: start-up, test, sanity check, set-up).
        train_s=round(lit.train_seconds, 2),
        val_s=round(lit.val_seconds, 2),
        device=device_description(trainer.strategy.root_device),
        world_size=trainer.world_size,
        global_batch_size=global_batch_size(cfg, trainer),
        test_images=lit.test_images or None,
        # From the test pass: rows are the true class, columns the predicted one.
        per_class_acc=(
            per_class_accuracy(confusion, lit.class_names()) if confusion is not None else None
        ),
        confusion_matrix=confusion,
        history=lit.history,
        tensorboard_dir=tensorboard.log_dir if tensorboard is not None else None,
        overrides=overrides,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    # Callbacks with something to add (diagnostics: peak memory, gradient norms).
    for callback in trainer.callbacks:
        if hasattr(callback, "results_extras"):
            results.update(callback.results_extras())
    return results


def global_batch_size(cfg: DictConfig, trainer: L.Trainer) -> int:
    """The images one optimizer step sees over all ranks: dataset.batch_size per rank, or less
    where a rank's share of the training split is smaller than that."""
    batch, ranks = cfg.dataset.batch_size, trainer.world_size
    splits = getattr(trainer.datamodule, "splits", None) or {}
    if "train" in splits:
        batch = min(batch, len(splits["train"][1]) // ranks or 1)
    return batch * ranks


def record_failure(run_dir: Path, err: BaseException, overrides: list[str]) -> bool:
    """A failed run still leaves results.json (status failed) and traceback.txt behind.

    Nothing already there is lost: the traceback is appended, a results.json that records an
    earlier run's outcome (finished or interrupted) is kept, and a user error against such a run's
    directory (a bad resume= command) writes nothing there at all: then this returns False, and
    the error belongs on the console only, not in that run's train.log."""
    if isinstance(err, RunDirError):  # another run's directory, or unwritable: write nothing there
        return False
    previous = read_results(run_dir)
    earlier_outcome = previous is not None and previous.get("status") != "failed"
    if earlier_outcome and isinstance(err, USER_ERRORS):
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / TRACEBACK_FILE, "a") as f:
        f.write(f"--- {datetime.now().isoformat(timespec='seconds')}\n")
        f.write("".join(traceback.format_exception(err)))
    if not earlier_outcome:
        failed = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        write_results(run_dir, failed | {"overrides": overrides})
    return True


def run_description(cfg: DictConfig, params: int, overrides: list[str]) -> str:
    """The line a run starts its log with: what trains on what, how, and where it writes."""
    return (
        f"{cfg.model._target_.rsplit('.', 1)[-1]} ({params:,} parameters) on {cfg.dataset.name} "
        f"at {cfg.dataset.image_size} px, batch {cfg.dataset.batch_size}, "
        f"{cfg.optimizer._target_.rsplit('.', 1)[-1]} lr {cfg.optimizer.lr}, "
        f"{cfg.trainer.max_epochs} epochs; overrides: {' '.join(overrides) or 'none'}; "
        f"run dir {cfg.paths.output_dir}"
    )


def print_summary(results: dict[str, Any], path: Path) -> None:
    """The lines a run ends with (console and train.log): outcome, test accuracy, speed, where
    results and logs are."""
    acc, epochs = results["test_acc"], results["epochs_completed"]
    val_acc, test_images = results["val_acc"], results.get("test_images")
    tested = f" on {test_images:,} test images" if test_images else ""
    lines = [
        f"{results['status']}: test_acc={'n/a' if acc is None else f'{acc:.4f}'}{tested}, "
        f"best val_acc={'n/a' if val_acc is None else f'{val_acc:.4f}'}, {epochs} epoch"
        f"{'' if epochs == 1 else 's'} in {results['wall_s']:.0f} s "
        f"({results['train_images_per_s']:.0f} train images/s on {results['device']})",
        f"results:     {path}",
    ]
    if results["tensorboard_dir"]:
        lines.append(f"TensorBoard: tensorboard --logdir {results['tensorboard_dir']}")
    if results["status"] == "diverged":
        lines.append(f"diverged:    {results['error']}")
    if results["status"] == "interrupted":
        lines.append(
            f"interrupted: {results['error']}; checkpoint {results['checkpoint']}. Continue "
            f"with: cnnlab-train resume={path.parent}"
        )
    for line in lines:
        log.info(line)
