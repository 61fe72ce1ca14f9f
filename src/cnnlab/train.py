"""``cnnlab-train``: compose the config, build model + data + LitClassifier, fit, test, and
write ``results.json`` into the run directory.

    cnnlab-train                                    # the seed recipe: experiment=lenet
    cnnlab-train model=lenet ablation=[relu,max_pool] optimizer.lr=0.1
    cnnlab-train -m model=vgg11,vgg16               # a sweep under outputs/multirun/
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cnnlab import resolvers
from cnnlab.analysis.min_size import forward_error, min_input_size
from cnnlab.callbacks import diagnostic_callbacks
from cnnlab.data import DatasetNotFoundError, IDXFormatError
from cnnlab.errors import ConfigError
from cnnlab.lit import DivergedError, LitClassifier
from cnnlab.runinfo import device_description, hydra_overrides, is_multirun

RESULTS_FILE = "results.json"
USER_ERRORS = (ConfigError, DatasetNotFoundError, IDXFormatError)


def build_model(cfg: DictConfig, image_size: int | None = None) -> torch.nn.Module:
    """Instantiate ``cfg.model``, optionally for another image size (models whose classifier
    width depends on it read ``dataset.image_size`` through interpolation)."""
    model_cfg = cfg.model
    if image_size is not None:
        cfg = cfg.copy()
        cfg.dataset.image_size = image_size
        model_cfg = cfg.model
    try:
        return instantiate(model_cfg)
    except Exception as err:  # Hydra wraps constructor errors; show the constructor's words
        cause = err.__cause__ or err
        raise ConfigError(f"cannot build model {cfg.model._target_}: {cause}") from err


def check_image_size(cfg: DictConfig) -> torch.nn.Module:
    """Build the model and make sure it accepts ``dataset.image_size``; if not, name the minimum."""
    size, channels = cfg.dataset.image_size, cfg.dataset.in_channels
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"dataset.image_size must be a positive integer, got {size!r}")
    error = forward_error(lambda s: build_model(cfg, s), channels, size)
    if error is None:
        return build_model(cfg)
    try:
        minimum = min_input_size(lambda s: build_model(cfg, s), channels)
        hint = f"the smallest input this model accepts is {minimum}x{minimum}"
    except ValueError:
        hint = "no input size up to 512 works either: check the model's knobs"
    raise ConfigError(
        f"model {cfg.model._target_} cannot run on {size}x{size} images: {hint}. "
        f"Set dataset.image_size={'' if 'minimum' not in locals() else minimum} or larger. "
        f"(First error: {error})"
    )


def _check_optimizer(cfg: DictConfig) -> None:
    lr = cfg.optimizer.get("lr")
    if not isinstance(lr, int | float) or lr <= 0:
        raise ConfigError(f"optimizer.lr must be a positive number, got {lr!r}")


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


def make_trainer(cfg: DictConfig, run_dir: Path) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

    callbacks: list[L.Callback] = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best-{epoch}",
            monitor="val/acc" if cfg.dataset.val_size else None,
            mode="max",
            save_last=True,
        )
    ]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar(leave=True))
    callbacks += diagnostic_callbacks(cfg.get("diagnostics"))
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    return L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
    )


def write_results(run_dir: Path, results: dict[str, Any]) -> Path:
    path = run_dir / RESULTS_FILE
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def run(cfg: DictConfig) -> dict[str, Any]:
    """One training run; returns (and writes) the results.json contents."""
    start = time.perf_counter()
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    _check_optimizer(cfg)
    model = check_image_size(cfg)
    try:
        datamodule = instantiate(cfg.dataset)
    except Exception as err:
        raise ConfigError(f"bad dataset config: {err.__cause__ or err}") from err
    params = sum(p.numel() for p in model.parameters())
    if cfg.get("compile"):
        model = torch.compile(model)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    lit = LitClassifier(
        model,
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
        num_classes=cfg.dataset.num_classes,
        label_smoothing=cfg.loss.label_smoothing,
        aux_weight=cfg.loss.aux_weight,
    )
    trainer = make_trainer(cfg, run_dir)
    if trainer.logger is not None:
        trainer.logger.log_hyperparams(flat_hparams(cfg), metrics={"hp_metric": 0.0})

    results: dict[str, Any] = {"status": "ok"}
    try:
        trainer.fit(lit, datamodule=datamodule)
    except DivergedError as err:
        results.update(
            status="diverged", error=str(err), diverged_epoch=err.epoch, diverged_step=err.step
        )
    if results["status"] == "ok" and cfg.get("test", True):
        trainer.test(lit, datamodule=datamodule, verbose=False)

    last = {key: values[-1] for key, values in lit.history.items() if values}
    results.update(
        test_acc=last.get("test/acc"),
        test_loss=last.get("test/loss"),
        val_acc=lit.best_val_acc if "val/acc" in last else None,
        train_loss=last.get("train/loss"),
        train_acc=last.get("train/acc"),
        epochs_completed=trainer.current_epoch,
        params=params,
        train_images_per_s=round(lit.train_images_per_s, 1),
        wall_s=round(time.perf_counter() - start, 2),
        device=device_description(trainer.strategy.root_device),
        world_size=trainer.world_size,
        history=lit.history,
        tensorboard_dir=trainer.logger.log_dir if trainer.logger else None,
        overrides=hydra_overrides(),
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    for callback in trainer.callbacks:
        if hasattr(callback, "results_extras"):
            results.update(callback.results_extras())
    if trainer.is_global_zero:
        path = write_results(run_dir, results)
        _print_summary(results, path)
    return results


def _print_summary(results: dict[str, Any], path: Path) -> None:
    from rich.console import Console

    console = Console()
    acc = results["test_acc"]
    console.print(
        f"[bold]{results['status']}[/bold]: test_acc="
        f"{'n/a' if acc is None else f'{acc:.4f}'}, best val_acc="
        f"{results['val_acc'] if results['val_acc'] is None else round(results['val_acc'], 4)}, "
        f"{results['epochs_completed']} epochs in {results['wall_s']:.0f} s "
        f"({results['train_images_per_s']:.0f} train images/s on {results['device']})"
    )
    console.print(f"results:     {path}")
    if results["tensorboard_dir"]:
        console.print(f"TensorBoard: tensorboard --logdir {results['tensorboard_dir']}")


def record_failure(cfg: DictConfig, err: BaseException) -> None:
    """A failed run still leaves results.json (status failed) and traceback.txt behind."""
    try:
        run_dir = Path(cfg.paths.output_dir)
    except Exception:  # noqa: BLE001 - the config itself may be what failed
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "traceback.txt").write_text("".join(traceback.format_exception(err)))
    if not (run_dir / RESULTS_FILE).exists():
        write_results(
            run_dir,
            {
                "status": "failed",
                "error": f"{type(err).__name__}: {err}",
                "overrides": hydra_overrides(),
            },
        )


@hydra.main(
    version_base="1.3", config_path=str(resolvers.project_root() / "conf"), config_name="train"
)
def main(cfg: DictConfig) -> float | None:
    try:
        results = run(cfg)
    except Exception as err:
        record_failure(cfg, err)
        if is_multirun():  # one bad job must not end a sweep
            print(f"job failed: {type(err).__name__}: {err}")
            return None
        if isinstance(err, USER_ERRORS):
            print(f"error: {err}")
            raise SystemExit(1) from None
        raise
    return results["val_acc"]  # what Hydra sweepers (Optuna) optimise


if __name__ == "__main__":
    main()
