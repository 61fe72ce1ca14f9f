"""Test a checkpoint on the full test split, exactly as a training run's own test pass does.

The run's LitClassifier test pass, through a Lightning Trainer: the same data path (the split held
as uint8, batches of ``dataset.eval_batch_size``, the datamodule's transform on the device), the
same memory format of model and batches, the same loss (label smoothing included), the same
summing of correct predictions. So the accuracy of a run's final weights on the same split and
device is the run's test_acc to the last digit, not merely close to it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, open_dict

from cnnlab.errors import ConfigError
from cnnlab.training.build import build_checked_model, build_datamodule
from cnnlab.training.lit import LitClassifier


@dataclass
class Evaluation:
    test_acc: float
    test_loss: float
    confusion: list[list[int]]  # rows: true class, columns: predicted
    classes: tuple[str, ...]
    precision: str


def full_test_split(cfg: DictConfig) -> DictConfig:
    """The run's config, testing on all of the test split (a run may have tested on a subset)."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.dataset.test_subset = None
    return cfg


def load_weights(model: torch.nn.Module, checkpoint: dict[str, Any], path: Path) -> None:
    """The LitClassifier checkpoint's ``model.*`` weights into ``model``; a ConfigError when they
    do not fit."""
    weights = {
        # torch.compile runs of old saved the wrapper's names (model._orig_mod.<name>)
        key.removeprefix("model.").replace("_orig_mod.", ""): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith("model.")
    }
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        details = " ".join(str(err).split())  # PyTorch lists the keys over many lines
        if len(details) > 300:
            details = details[:300] + "..."
        raise ConfigError(
            f"checkpoint {path} does not fit the model rebuilt from its run's overrides "
            f"({details}). conf/ has changed since the run, or the checkpoint belongs to another "
            f"run: give run_dir=<the run it came from>."
        ) from err


def _never_called(*args: Any, **kwargs: Any) -> torch.optim.Optimizer:
    raise RuntimeError("an evaluation does not optimise")


def _trainer_args(device: torch.device, precision: str) -> dict[str, Any]:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return {"accelerator": "gpu", "devices": [index], "precision": precision}
    if device.type == "cpu" and "16" in precision and not precision.startswith("bf16"):
        # float16 autocast is a GPU feature; on the CPU a 16-mixed run is evaluated in float32.
        precision = "32-true"
    return {"accelerator": device.type, "devices": 1, "precision": precision}


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Without "GPU available: ..., TPU available: ..." lines: this is no training run."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def evaluate_checkpoint(
    cfg: DictConfig, checkpoint: dict[str, Any], path: Path, device: torch.device
) -> Evaluation:
    """Test ``checkpoint`` (read with weights_only=True) as the model of ``cfg`` (a config
    rebuilt from conf/: cnnlab.runs.rebuild) on the full test split, on ``device``."""
    cfg = full_test_split(cfg)
    model = build_checked_model(cfg)
    load_weights(model, checkpoint, path)
    datamodule = build_datamodule(cfg)
    lit = LitClassifier(
        model,
        optimizer=_never_called,
        label_smoothing=cfg.loss.label_smoothing,  # test_loss is the run's loss, smoothing and all
        aux_weight=cfg.loss.aux_weight,
    )
    args = _trainer_args(device, str(cfg.trainer.get("precision", "32-true")))
    with _quiet_lightning():
        trainer = L.Trainer(
            **args,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        with warnings.catch_warnings():
            # Lightning 2.6's use of torch's LeafSpec, deprecated by torch: nothing to act on
            # (cnnlab.training.trainer.fit_and_test hides it too).
            warnings.filterwarnings(
                "ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning
            )
            trainer.test(lit, datamodule=datamodule, verbose=False)
    if lit.test_confusion is None:
        raise RuntimeError("the test pass saw no batch")  # a bug: the split is never empty
    return Evaluation(
        test_acc=lit.history["test/acc"][-1],
        test_loss=lit.history["test/loss"][-1],
        confusion=lit.test_confusion,
        classes=lit.class_names(),
        precision=str(args["precision"]),
    )
