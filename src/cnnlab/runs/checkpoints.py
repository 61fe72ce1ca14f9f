"""Checkpoints of a run: the two files it keeps, what they hold beyond Lightning's own state, how
they are read, and the checks that turn a wrong checkpoint into a clear message.

A run keeps ``checkpoints/best-epoch=N.ckpt`` (best validation accuracy so far; the last epoch's
where there is no validation) and ``checkpoints/last.ckpt`` (every epoch's end, and mid-epoch on
SIGTERM), both written by Lightning's own ModelCheckpoint. Every checkpoint of cnnlab carries a
``cnnlab`` entry: the run's config (unresolved, so the run can be continued with exactly that
config), the model it was made for, the command-line overrides. Checkpoints are read with
``weights_only=True``: tensors and plain containers only, never arbitrary pickled objects.

Every checkpoint is written whole or not at all (AtomicCheckpointIO, the Trainer's CheckpointIO
plugin): a kill or a full disk keeps the previous file. A checkpoint that cannot be written ends
the run with a message naming the file and why, and a checkpoint directory that cannot be written
at all is found before training starts (check_checkpoint_dir).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from cnnlab.errors import ConfigError
from cnnlab.runs.files import atomic_write, os_error_reason
from cnnlab.runs.rundir import CHECKPOINT_DIR, LAST, checkpoint_dir, is_global_rank_zero
from cnnlab.seeds import batch_seed

META_KEY = "cnnlab"


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


class MovableModelCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, for run directories that are copied or moved: Lightning
    forgets the best score when a checkpoint's directory differs from the callback's (its
    warning "The dirpath has changed"), and the next, worse epoch became the new best-*.ckpt.
    Here the stored paths are moved along with the directory, by file name."""

    @property
    def state_key(self) -> str:
        # Lightning's own name in the key: checkpoints of either class resume into the other.
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        before = state_dict.get("dirpath")
        if before and self.dirpath and before != self.dirpath:
            state_dict = self.moved_state(state_dict, str(self.dirpath))
        super().load_state_dict(state_dict)

    @staticmethod
    def moved_state(state: dict[str, Any], dirpath: str) -> dict[str, Any]:
        """``state`` with every checkpoint path it names put into ``dirpath`` (same file name)."""

        def moved(path: Any) -> Any:
            return str(Path(dirpath) / Path(path).name) if isinstance(path, str) and path else path

        state = dict(state, dirpath=dirpath)
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if key in state:
                state[key] = moved(state[key])
        if isinstance(state.get("best_k_models"), dict):
            state["best_k_models"] = {moved(k): v for k, v in state["best_k_models"].items()}
        return state


def checkpoint_callbacks(cfg: DictConfig, run_dir: Path) -> list[ModelCheckpoint]:
    """The run's two checkpoint files, in this order: the best one, then last.ckpt.

    last.ckpt is a second callback, not ``save_last=True`` of the first: since Lightning 2.6 that
    writes last.ckpt only in epochs that improve the best, and a resume would then repeat every
    epoch since the best one. In an epoch that improves the best both files are written.
    (docs/performance.md, "Decisions of the redesign": what a hard link or a background writer
    would save.)"""
    folder = checkpoint_dir(run_dir)
    if is_global_rank_zero():  # the rank that writes them
        check_checkpoint_dir(folder)
    best = MovableModelCheckpoint(
        dirpath=folder,
        filename="best-{epoch}",
        monitor="val/acc" if cfg.dataset.val_size else None,
        mode="max",
    )
    last = MovableModelCheckpoint(
        dirpath=folder,
        filename=LAST.removesuffix(".ckpt"),
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
    )
    return [best, last]


class CheckpointWriteError(ConfigError):
    """A checkpoint that could not be written: the disk or its permissions, not the code."""


def _write_failure(path: Path, err: OSError) -> str:
    run_dir = path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent
    return (
        f"could not write the checkpoint {path}: {os_error_reason(err)}. The run stopped; the "
        f"checkpoint it wrote there before (if any) is kept as it was. Make room "
        f"or make {path.parent} writable, then continue the run with cnnlab-train "
        f"resume={run_dir} (or start it again if it has no checkpoint yet)."
    )


def check_checkpoint_dir(folder: Path) -> None:
    """Before training: a CheckpointWriteError where ``folder`` cannot be written (read-only, not
    a directory), which would otherwise surface only at the end of the first epoch, or, under
    DDP, not at all (Lightning's own save swallows a PermissionError). Also removes the temporary
    files of writes a kill interrupted; the run directory is this run's (claim_run_dir)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CheckpointWriteError(
            f"the checkpoint directory {folder} cannot be written: {os_error_reason(err)}. A run "
            f"writes its checkpoints there (last.ckpt every epoch); nothing was trained. Make it "
            f"a writable directory, or give the run another one with hydra.run.dir=<dir>."
        ) from err
    for leftover in folder.glob(".*.ckpt.*.tmp"):
        leftover.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's CheckpointIO, with every checkpoint written whole (cnnlab.runs.rundir
    .atomic_write: a temporary file beside it, fsynced, renamed over it).

    Lightning's own save serialises into memory, writes that to a temporary file in $TMPDIR and
    moves it; across filesystems the move is a copy that a kill or a full disk leaves partial
    (a 0-byte last.ckpt that no resume= can read), and a PermissionError is swallowed. Here a
    failed write keeps the previous file and raises CheckpointWriteError, which ends the run."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's way
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        try:
            with atomic_write(path) as f:
                torch.save(checkpoint, f)
        except (OSError, RuntimeError) as err:
            # torch.save reports a failed write of its file object as a RuntimeError raised
            # while handling the OSError.
            cause = _os_error(err)
            if cause is None:
                raise
            raise CheckpointWriteError(_write_failure(path, cause)) from err


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError an error is, or was raised while handling, if any."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err


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
        if isinstance(exception, CheckpointWriteError):
            _end_other_ranks(trainer)
        elif isinstance(exception, SIGTERMException):
            # Lightning raises this between two batches: the state is consistent.
            trainer.save_checkpoint(path)
            self.interrupted_checkpoint = path
        elif isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            # Ctrl-C can land inside an optimizer step: keep the last epoch-end checkpoint as it
            # is. Lightning exits right after this hook, so the hint is printed here.
            if path.is_file():
                print(f"\nContinue from the last epoch: cnnlab-train resume={self.run_dir}")


def _end_other_ranks(trainer: L.Trainer) -> None:
    """Rank 0 could not write a checkpoint and ends the run. The other ranks wait for its save at
    a barrier: left alone, each would wake up to a lost connection, print a traceback of its own
    and record that as the run's error. The processes Lightning started for them are ended here,
    as Lightning does on Ctrl-C (ranks started by torchrun or SLURM are not this process's)."""
    procs = getattr(trainer.strategy.launcher, "procs", None)
    if not trainer.is_global_zero or not procs:
        return
    # Lightning's observer thread watches this very list and, seeing a process that ended with
    # an error, kills rank 0 as well, before it could record why the run stopped: empty it first.
    others = list(procs)
    procs.clear()
    for proc in others:
        proc.kill()
    for proc in others:
        proc.wait()


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
