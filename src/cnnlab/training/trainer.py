"""The ``lightning.Trainer`` of a run (``cfg.trainer`` plus the run's callbacks and logger), the
checks of its config, and fit-then-test with the outcomes a run records."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import DictConfig, OmegaConf

from cnnlab.devices import gpu_available
from cnnlab.errors import ConfigError
from cnnlab.training.callbacks import diagnostic_callbacks
from cnnlab.training.fast_forward import check_cuda_graphs
from cnnlab.training.lit import DivergedError, LitClassifier
from cnnlab.training.profiler import NoOpProfiler


class _NoAdvertising(logging.Filter):
    """Drop Lightning's "Tip: try installing litlogger" line from every run's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvertising())


def check_trainer(cfg: DictConfig) -> None:
    """The trainer settings Lightning would accept and then fail on deep inside fit()."""
    epochs = cfg.trainer.get("max_epochs")  # -1 means "no limit"
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool)):
        raise ConfigError(f"trainer.max_epochs must be an integer, got {epochs!r}")
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not gpu_available(accelerator):
        # Lightning's own words here are "No supported gpu backend found!".
        raise ConfigError(
            f"trainer.accelerator={accelerator} (trainer=gpu, ddp, fsdp, multinode) needs a GPU, "
            f"and PyTorch sees none on this machine (torch.cuda.is_available() is False). Train "
            f"on the CPU: leave trainer= at its default (trainer=ddp_cpu for several processes), "
            f"and for the big models the quick mode of the course items (make <item> QUICK=1, "
            f"EXERCISES.md)."
        )
    strategy = str(cfg.trainer.get("strategy", ""))
    if "spawn" in strategy:
        raise ConfigError(
            f"trainer.strategy={strategy} trains in child processes that return no metrics, so "
            f"results.json would be empty; use trainer=ddp (GPUs) or trainer=ddp_cpu (CPU)."
        )


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The config flattened to 'group.key' scalars for TensorBoard's hparams tab."""
    container = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = node if isinstance(node, int | float | str | bool) else str(node)

    for group in ("model", "dataset", "optimizer", "scheduler", "loss", "seed"):
        walk(group, container.get(group))
    return {k: v for k, v in flat.items() if not k.endswith(("_target_", "_partial_", ".root"))}


def make_trainer(
    cfg: DictConfig, run_dir: Path, callbacks: Sequence[L.Callback] = ()
) -> L.Trainer:
    """The Trainer of a run: ``cfg.trainer``, the given callbacks (checkpoints, run state), a
    progress bar, the diagnostics, the logger; its hyper-parameters logged."""
    from lightning.pytorch.callbacks import RichProgressBar

    check_trainer(cfg)
    callbacks = list(callbacks)
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar(leave=True))
    callbacks += diagnostic_callbacks(cfg.get("diagnostics"))
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    if cfg.get("deterministic"):
        # cuDNN's benchmark mode picks algorithms by timing them, which can differ run to run.
        trainer_args.update(deterministic=True, benchmark=False)
    if trainer_args.get("profiler") is None:
        trainer_args["profiler"] = NoOpProfiler()
    try:
        trainer = L.Trainer(
            **trainer_args, logger=logger, callbacks=callbacks, default_root_dir=str(run_dir)
        )
    except (TypeError, ValueError, MisconfigurationException) as err:
        raise ConfigError(
            f"bad trainer config: {err}. Every trainer.* key is a lightning.Trainer argument; "
            f"check its value (e.g. trainer.max_epochs=10, trainer.devices=1)."
        ) from err
    check_cuda_graphs(cfg, trainer)
    if trainer.logger is not None:
        trainer.logger.log_hyperparams(flat_hparams(cfg), metrics={"hp_metric": 0.0})
    return trainer


def fit_and_test(
    trainer: L.Trainer,
    lit: LitClassifier,
    datamodule: Any,
    *,
    ckpt_path: Path | None,
    test: bool,
) -> dict[str, Any]:
    """Train (from ``ckpt_path`` if given), then test; returns how it ended: ``{"status": "ok"}``,
    or ``diverged`` / ``interrupted`` (SIGTERM) with the details. Other errors propagate."""
    try:
        with warnings.catch_warnings():
            # Continuing a run writes into its own, non-empty checkpoints/ on purpose.
            warnings.filterwarnings("ignore", message="Checkpoint directory .* not empty")
            # Lightning 2.6 builds torch's LeafSpec, which torch 2.14 deprecates: a FutureWarning
            # about Lightning's internals, twice a run, that a user can do nothing about.
            warnings.filterwarnings(
                "ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning
            )
            trainer.fit(lit, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            if test:
                trainer.test(lit, datamodule=datamodule, verbose=False)
    except DivergedError as err:
        return {
            "status": "diverged",
            "error": str(err),
            "diverged_epoch": err.epoch,
            "diverged_step": err.step,
        }
    except SIGTERMException:
        where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        return {"status": "interrupted", "error": f"SIGTERM received at {where}"}
    return {"status": "ok"}
