"""Checkpoints of a run: the two files it keeps, what they hold beyond Lightning's own state, how
they are read, and the checks that turn a wrong checkpoint into a clear message.

A run keeps ``checkpoints/best-epoch=N.ckpt`` (best validation accuracy so far; the last epoch's
where there is no validation) and ``checkpoints/last.ckpt`` (every epoch's end, and mid-epoch on
SIGTERM), both written by Lightning's own ModelCheckpoint. Every checkpoint of cnnlab carries a
``cnnlab`` entry: the run's config (unresolved, so the run can be continued with exactly that
config), the model it was made for, the command-line overrides. Checkpoints are read with
``weights_only=True``: tensors and plain containers only, never arbitrary pickled objects.
"""

from __future__ import annotations

import pickle
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from cnnlab.errors import ConfigError
from cnnlab.runs.rundir import LAST, checkpoint_dir
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


def checkpoint_callbacks(cfg: DictConfig, run_dir: Path) -> list[ModelCheckpoint]:
    """The run's two checkpoint files, in this order: the best one, then last.ckpt.

    last.ckpt is a second callback, not ``save_last=True`` of the first: since Lightning 2.6 that
    writes last.ckpt only in epochs that improve the best, and a resume would then repeat every
    epoch since the best one. In an epoch that improves the best both files are written.
    (docs/performance.md, "Decisions of the redesign": what a hard link or a background writer
    would save.)"""
    folder = checkpoint_dir(run_dir)
    best = ModelCheckpoint(
        dirpath=folder,
        filename="best-{epoch}",
        monitor="val/acc" if cfg.dataset.val_size else None,
        mode="max",
    )
    last = ModelCheckpoint(
        dirpath=folder,
        filename=LAST.removesuffix(".ckpt"),
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
    )
    return [best, last]


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
            # Lightning raises this between two batches: the state is consistent.
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
