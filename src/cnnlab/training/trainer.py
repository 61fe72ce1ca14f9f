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
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import DictConfig, OmegaConf

from cnnlab.devices import gpu_available
from cnnlab.errors import ConfigError
from cnnlab.runs.checkpoints import AtomicCheckpointIO
from cnnlab.runs.results import epoch_text, tensorboard_logger
from cnnlab.training.callbacks import EpochLog, diagnostic_callbacks
from cnnlab.training.checks import flat_keys
from cnnlab.training.fast_forward import check_cuda_graphs
from cnnlab.training.lit import DivergedError, LitClassifier
from cnnlab.training.profiler import NoOpProfiler

# The columns of TensorBoard's HPARAMS tab: test accuracy, best validation accuracy (hp_metric),
# the last epoch's validation accuracy and training loss, and training speed.
HPARAM_METRICS = ("test/acc", "hp_metric", "val/acc", "train/loss", "train/images_per_s")


class _NoAdvertising(logging.Filter):
    """Drop Lightning's "Tip: try installing litlogger" line from every run's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvertising())


def log_lightning_to_the_run_log() -> None:
    """Let Lightning's messages (devices, model summary, warnings) reach the handlers Hydra set
    up for the run, console and train.log. Lightning gives its logger a console handler of its
    own and stops it from propagating when it is imported before logging is configured, as
    here; its messages then never reached train.log."""
    names = [n for n in logging.root.manager.loggerDict if n.startswith("lightning")]
    for name in names:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def check_trainer(cfg: DictConfig) -> None:
    """The trainer settings Lightning would accept and then fail on deep inside fit()."""
    epochs = cfg.trainer.get("max_epochs")  # -1 means "no limit"
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool)):
        raise ConfigError(f"trainer.max_epochs must be an integer, got {epochs!r}")
    if epochs == 0:
        raise ConfigError(
            "trainer.max_epochs=0 trains nothing: the run would test an untrained model and "
            "record it as ok. Give 1 or more (or -1, no limit, with trainer.max_steps=N)."
        )
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
    for group in ("model", "dataset", "optimizer", "scheduler", "loss", "seed"):
        for key, value in flat_keys(container.get(group), group).items():
            flat[key] = value if isinstance(value, int | float | str | bool) else str(value)
    return {k: v for k, v in flat.items() if not k.endswith(("_target_", "_partial_", ".root"))}


def make_trainer(
    cfg: DictConfig, run_dir: Path, callbacks: Sequence[L.Callback] = ()
) -> L.Trainer:
    """The Trainer of a run: ``cfg.trainer``, the given callbacks (checkpoints, run state), a
    progress bar, the diagnostics, the logger; its hyper-parameters logged."""
    from lightning.pytorch.callbacks import RichProgressBar

    check_trainer(cfg)
    callbacks = [*callbacks, EpochLog()]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar(leave=True))
    callbacks += diagnostic_callbacks(cfg.get("diagnostics"))
    loggers = build_loggers(cfg)
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    if cfg.get("deterministic"):
        # cuDNN's benchmark mode picks algorithms by timing them, which can differ run to run.
        trainer_args.update(deterministic=True, benchmark=False)
    if trainer_args.get("profiler") is None:
        trainer_args["profiler"] = NoOpProfiler()
    # Checkpoints written whole, and a failed write fails the run (cnnlab.runs.checkpoints).
    plugins = trainer_args.get("plugins") or []  # ++trainer.plugins=... of the command line
    plugins = plugins if isinstance(plugins, list) else [plugins]
    trainer_args["plugins"] = [*plugins, AtomicCheckpointIO()]
    try:
        trainer = L.Trainer(
            **trainer_args, logger=loggers or False, callbacks=callbacks,
            default_root_dir=str(run_dir),
        )
    except (TypeError, ValueError, MisconfigurationException) as err:
        raise ConfigError(
            f"bad trainer config: {err}. Every trainer.* key is a lightning.Trainer argument; "
            f"check its value (e.g. trainer.max_epochs=10, trainer.devices=1)."
        ) from err
    check_cuda_graphs(cfg, trainer)
    log_hparams(trainer, flat_hparams(cfg))
    return trainer


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """The run's loggers: one per entry of ``cfg.logger`` (logger=[tensorboard,csv])."""
    if not cfg.get("logger"):
        return []
    if "_target_" in cfg.logger:  # one logger, as checkpoints of earlier versions hold it
        return [instantiate(cfg.logger)]
    return [instantiate(node) for node in cfg.logger.values() if node]


def log_hparams(trainer: L.Trainer, params: dict[str, Any]) -> None:
    """The run's settings for every logger, and TensorBoard's HPARAMS tab with the metrics that
    compare runs (HPARAM_METRICS): their values are the scalars the run logs under those tags.
    Written directly, not through log_hyperparams(metrics=...), which would also log a dummy
    first value into each metric's curve."""
    for logger in trainer.loggers:
        logger.log_hyperparams(params)
    tensorboard = tensorboard_logger(trainer)
    if tensorboard is None or not trainer.is_global_zero:
        return
    from torch.utils.tensorboard.summary import hparams

    writer = tensorboard.experiment.file_writer
    for summary in hparams(params, dict.fromkeys(HPARAM_METRICS, 0.0)):
        writer.add_summary(summary)


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
        where = f"{epoch_text(trainer.current_epoch)}, step {trainer.global_step}"
        return {"status": "interrupted", "error": f"SIGTERM received at {where}"}
    return {"status": "ok"}
