"""Checkpoints of a run: what they hold beyond Lightning's own state, how they are found and read,
and the checks that turn a wrong checkpoint into a clear message.

Every checkpoint of cnnlab carries a ``cnnlab`` entry: the run's config (unresolved, so the run can
be continued with exactly that config), the model it was made for, the command-line overrides,
and the LitClassifier's history. Checkpoints are read with ``weights_only=True``: tensors and
plain containers only, never arbitrary pickled objects.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from cnnlab.checkpoint_writer import CheckpointWriter, break_hard_link
from cnnlab.errors import ConfigError

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
META_KEY = "cnnlab"


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest ``last*.ckpt`` of a run (Lightning writes ``last-v1.ckpt`` when a run dir was
    moved), or None."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return None
    candidates = sorted(folder.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def run_dir_of(ckpt_path: str | Path) -> Path | None:
    """The run a checkpoint file belongs to (``<run>/checkpoints/x.ckpt``), or None."""
    path = Path(ckpt_path)
    return path.parent.parent if path.parent.name == CHECKPOINT_DIR else None


def batch_seed(seed: int, epoch: int, batch_idx: int, rank: int = 0) -> int:
    """The global RNG seed of one training batch (dropout, stochastic layers); DDP ranks differ."""
    return (((seed * 1_000_003 + epoch) * 1_000_033 + batch_idx) * 1_009 + rank) % 2**63


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a missing, broken or unsafe file is a
    ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist. Give the path of a .ckpt file.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise ConfigError(
            f"checkpoint {path} holds pickled Python objects besides weights and is not loaded "
            f"for safety (weights_only=True). Use a checkpoint written by cnnlab. "
            f"({str(err).splitlines()[0]})"
        ) from err
    except (RuntimeError, OSError, EOFError) as err:
        raise ConfigError(
            f"checkpoint {path} cannot be read: it is truncated or not a PyTorch checkpoint "
            f"({str(err).splitlines()[0]}). Use another checkpoint of the run."
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"{path} is not a Lightning checkpoint (no state_dict in it)")
    return checkpoint


def model_label(meta: dict[str, Any] | None) -> str:
    """'lenet (cnnlab.models.lenet.LeNet)' for a checkpoint's metadata."""
    if not meta:
        return "an unknown model (the checkpoint was not written by cnnlab)"
    target = meta.get("model_target", "?")
    preset = (meta.get("choices") or {}).get("model")
    return f"model={preset} ({target})" if preset else target


def _shapes(state_dict: dict[str, Any], prefix: str = "model.") -> dict[str, tuple[int, ...]]:
    # torch.compile wraps the model: its parameters gain an "_orig_mod." infix.
    return {
        key[len(prefix) :].replace("_orig_mod.", ""): tuple(value.shape)
        for key, value in state_dict.items()
        if key.startswith(prefix) and hasattr(value, "shape")
    }


def check_checkpoint_fits(
    checkpoint: dict[str, Any], model: torch.nn.Module, cfg: DictConfig, path: str | Path
) -> None:
    """Raise a ConfigError naming the model a checkpoint was made for when its weights do not fit
    the model this run builds."""
    saved = _shapes(checkpoint["state_dict"])
    wanted = _shapes(model.state_dict(), prefix="")
    if saved == wanted:
        return
    missing = sorted(set(wanted) - set(saved))
    extra = sorted(set(saved) - set(wanted))
    differing = [k for k in sorted(set(saved) & set(wanted)) if saved[k] != wanted[k]]
    if differing:
        key = differing[0]
        first = f"{key} is {list(saved[key])} there, {list(wanted[key])} here"
    else:
        first = f"parameters missing: {missing[:3]}, unexpected: {extra[:3]}"
    meta = checkpoint.get(META_KEY)
    raise ConfigError(
        f"checkpoint {path} was made for {model_label(meta)}, which does not fit the model this "
        f"run builds ({cfg.model._target_}; {first}). Resume with the model the checkpoint was "
        f"made for (resume=<its run dir> reuses that run's config), or start a new run without "
        f"resume=/ckpt_path=."
    )


def checkpoint_writer(trainer: L.Trainer) -> CheckpointWriter | None:
    """The run's CheckpointWriter (make_trainer installs one), or None for another trainer."""
    io = trainer.strategy.checkpoint_io
    return io if isinstance(io, CheckpointWriter) else None


def _loggers_read_checkpoint_files(trainer: L.Trainer) -> bool:
    """Whether a logger looks at the files right after a save (W&B, MLflow upload them), so
    they must be written by then. TensorBoard's hook is a no-op."""
    no_ops = (Logger.after_save_checkpoint, TensorBoardLogger.after_save_checkpoint)
    return any(type(logger).after_save_checkpoint not in no_ops for logger in trainer.loggers)


@contextmanager
def _in_background(trainer: L.Trainer) -> Iterator[None]:
    writer = checkpoint_writer(trainer)
    if writer is None or _loggers_read_checkpoint_files(trainer):
        yield
        return
    with writer.background():
        yield


def link_checkpoint(source: str | Path, target: str | Path) -> None:
    """Make ``target`` a hard link to ``source``; ``target`` is never missing or half-made."""
    staged = Path(target).with_name(Path(target).name + ".link")
    staged.unlink(missing_ok=True)
    os.link(source, staged)
    os.replace(staged, target)


class BackgroundModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose writes and removals go to the run's CheckpointWriter in the
    background (cnnlab.checkpoint_writer): training goes on while a file is written."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        with _in_background(trainer):
            super()._save_checkpoint(trainer, filepath)

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        with _in_background(trainer):
            super()._remove_checkpoint(trainer, filepath)


class LastCheckpoint(BackgroundModelCheckpoint):
    """``last.ckpt`` after every epoch; in an epoch whose state the best-checkpoint callback has
    just written (it improved val/acc, or there is no validation), a hard link to that file
    instead of a second serialisation: AlexNet's and VGG-11's checkpoints are ~180 MB each.

    The two files would differ only in this callback's own entry, which holds nothing but the
    fixed path of last.ckpt. Runs on several processes write as usual.
    """

    def __init__(self, best: ModelCheckpoint, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.best = best

    def _same_state_file(self, trainer: L.Trainer) -> str | None:
        # Lightning's record of the best callback's latest write (no public equivalent); were
        # it renamed, every epoch is written as usual. The file itself may still be queued in
        # the CheckpointWriter: the link is queued behind it.
        if trainer.world_size != 1:
            return None
        if getattr(self.best, "_last_global_step_saved", None) != trainer.global_step:
            return None
        return getattr(self.best, "_last_checkpoint_saved", "") or None

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        source = self._same_state_file(trainer)
        writer = checkpoint_writer(trainer)
        if source is None:
            if writer is None:  # a CheckpointWriter breaks the link itself, in its own order
                break_hard_link(filepath)
            super()._save_checkpoint(trainer, filepath)
            return
        if writer is None:
            link_checkpoint(source, filepath)
        else:
            with _in_background(trainer):
                writer.after_writes(link_checkpoint, source, filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        for logger in trainer.loggers:  # as after a write (loggers that upload checkpoints)
            logger.after_save_checkpoint(proxy(self))


class RunCheckpointing(L.Callback):
    """What makes a resumed run equal to an uninterrupted one:

    - saves the run's config in every checkpoint (the LitClassifier saves its own history);
    - seeds the global RNG per training batch from (seed, epoch, batch), so dropout draws do not
      depend on where a run was stopped;
    - on SIGTERM (SLURM's notice before preemption) writes ``checkpoints/last.ckpt`` mid-epoch;
      Lightning then leaves ``fit`` and the runner records the run as interrupted. (Ctrl-C can
      land inside an optimizer step, so it only prints how to resume from the last epoch.)
    """

    def __init__(self, cfg: DictConfig, run_dir: Path, meta: dict[str, Any]) -> None:
        self.seed = int(cfg.seed)
        self.run_dir = run_dir
        self.meta = meta
        self.interrupted_checkpoint: Path | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        seed = batch_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        # Only the generators this run draws from. torch.manual_seed would also queue a seeding
        # of every CUDA/XPU/MTIA device on a machine without them, with a formatted stack trace
        # each: about 0.13 ms per batch on a CPU.
        torch.default_generator.manual_seed(seed)
        if pl_module.device.type == "cuda":
            torch.cuda.manual_seed(seed)  # the current device; CUDA is initialised by now

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[META_KEY] = self.meta

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        path = checkpoint_dir(self.run_dir) / LAST
        if isinstance(exception, SIGTERMException):
            # Lightning raises this between two batches: the state is consistent. Written at
            # once, after any queued checkpoint work (CheckpointWriter), breaking a hard link.
            trainer.save_checkpoint(path)
            self.interrupted_checkpoint = path
        elif isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            # Ctrl-C can land inside an optimizer step: keep the last epoch-end checkpoint as it
            # is. Lightning exits right after this hook, so the hint is printed here.
            if path.is_file():
                print(f"\nContinue from the last epoch: cnnlab-train resume={self.run_dir}")


def checkpoint_meta(cfg: DictConfig, overrides: list[str], choices: dict[str, Any]) -> dict:
    """The ``cnnlab`` entry of this run's checkpoints (plain containers: weights_only-safe)."""
    return {
        "config": OmegaConf.to_container(cfg, resolve=False),
        "model_target": str(cfg.model._target_),
        "choices": choices,
        "overrides": list(overrides),
        "saved_by": "cnnlab",
        "created": datetime.now().isoformat(timespec="seconds"),
    }
