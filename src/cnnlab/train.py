"""``cnnlab-train``: compose the config, build model + data + LitClassifier, fit, test, and
write ``results.json`` into the run directory.

    cnnlab-train                                    # the seed recipe: experiment=lenet
    cnnlab-train model=lenet ablation=[relu,max_pool] optimizer.lr=0.1
    cnnlab-train -m model=vgg11,vgg16               # a sweep under outputs/multirun/
    cnnlab-train resume=outputs/runs/<date>/<time>  # continue a run in place (cnnlab.resume)

A run that diverges ends normally with ``status: diverged``; any other failure leaves
``results.json`` (``status: failed``) and ``traceback.txt`` in the run dir. Inside a ``-m`` sweep a
failed job does not stop the sweep; the sweep's summary (cnnlab.hydra_callbacks) exits non-zero.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
import traceback
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import DictConfig, OmegaConf

from cnnlab import resolvers
from cnnlab.allocator import keep_freed_memory
from cnnlab.analysis.min_size import forward_error, min_input_size
from cnnlab.callbacks import diagnostic_callbacks
from cnnlab.checkpoint_writer import CheckpointWriter
from cnnlab.checkpoints import (
    BackgroundModelCheckpoint,
    LastCheckpoint,
    RunCheckpointing,
    check_checkpoint_fits,
    checkpoint_meta,
    checkpoint_writer,
)
from cnnlab.data import DatasetNotFoundError, IDXFormatError
from cnnlab.errors import ConfigError
from cnnlab.lit import DivergedError, LitClassifier
from cnnlab.profiler import NoOpProfiler
from cnnlab.resume import RESULTS_FILE, RunPlan, plan_run, read_results, run_overrides
from cnnlab.runinfo import device_description, is_extra_ddp_process, is_multirun

USER_ERRORS = (ConfigError, DatasetNotFoundError, IDXFormatError)
SWEEP_DIR_ENV = "CNNLAB_SWEEP_DIR"  # rank 0's sweep dir, for the DDP processes it starts


class _NoAdvertising(logging.Filter):
    """Drop Lightning's "Tip: try installing litlogger" line from every run's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvertising())
TRACEBACK_FILE = "traceback.txt"
_runs_in_this_process = 0  # sweeps run their jobs one after another in one process


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
    # Shapes only, on the meta device: instant even for VGG, and the same errors as on the CPU.
    error = forward_error(lambda s: build_model(cfg, s), channels, size, device="meta")
    if error is None:
        return build_model(cfg)
    try:
        minimum = min_input_size(lambda s: build_model(cfg, s), channels, device="meta")
        hint = (
            f"the smallest input this model accepts is {minimum}x{minimum}. "
            f"Set dataset.image_size={minimum} or larger."
        )
    except ValueError:
        hint = "no input size up to 512 works either: check the model's knobs."
    raise ConfigError(
        f"model {cfg.model._target_} cannot run on {size}x{size} images: {hint} "
        f"(First error: {error})"
    )


def _check_optimizer(cfg: DictConfig) -> None:
    lr = cfg.optimizer.get("lr")
    if not isinstance(lr, int | float) or isinstance(lr, bool) or lr <= 0:
        raise ConfigError(f"optimizer.lr must be a positive number, got {lr!r}")


def gpu_available(accelerator: str = "gpu") -> bool:
    """Whether Lightning's ``accelerator`` ("gpu": CUDA or Apple's MPS; "cuda") has a device."""
    if torch.cuda.is_available():
        return True
    return accelerator == "gpu" and torch.backends.mps.is_available()


def _check_trainer(cfg: DictConfig) -> None:
    # Lightning accepts a string here and fails deep inside fit(); -1 means "no limit".
    epochs = cfg.trainer.get("max_epochs")
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


def _check_cuda_graphs(cfg: DictConfig, trainer: L.Trainer) -> None:
    """cuda_graphs=true where cnnlab.cuda_graphs can keep what it promises, or a ConfigError."""
    if not cfg.get("cuda_graphs"):
        return
    why = None
    if trainer.strategy.root_device.type != "cuda":
        why = f"it needs a CUDA GPU and this run trains on {trainer.strategy.root_device}"
    elif trainer.world_size > 1:
        why = "it is for one GPU (DDP's gradient hooks would run inside the graph)"
    elif cfg.get("compile"):
        why = "compile=true is on too (choose one: torch.compile records its own graphs)"
    elif trainer.accumulate_grad_batches != 1:
        why = "the replayed backward overwrites the gradients that accumulate_grad_batches adds"
    if why:
        raise ConfigError(f"cuda_graphs=true cannot be used here: {why}. Drop cuda_graphs=true.")


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
    cfg: DictConfig, run_dir: Path, extra_callbacks: list[L.Callback] | None = None
) -> L.Trainer:
    """The Trainer of a run: the last and the best checkpoint in ``<run dir>/checkpoints``."""
    from lightning.pytorch.callbacks import RichProgressBar

    best = BackgroundModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best-{epoch}",
        monitor="val/acc" if cfg.dataset.val_size else None,
        mode="max",
    )
    callbacks: list[L.Callback] = [
        best,
        # last.ckpt after every epoch. Not save_last=True of the one above: since Lightning 2.6
        # that writes last.ckpt only in epochs that improve the best, and a resume would then
        # repeat every epoch since the best one. Runs after `best`, whose file it may link to.
        LastCheckpoint(
            best,
            dirpath=run_dir / "checkpoints",
            filename="last",
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
        ),
        *(extra_callbacks or []),
    ]
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
    # Checkpoint files are written by a background thread (cnnlab.checkpoint_writer).
    writer = CheckpointWriter(enabled=bool(cfg.get("background_checkpoints", True)))
    trainer_args["plugins"] = [*(trainer_args.get("plugins") or []), writer]
    try:
        return L.Trainer(
            **trainer_args, logger=logger, callbacks=callbacks, default_root_dir=str(run_dir)
        )
    except (TypeError, ValueError, MisconfigurationException) as err:
        raise ConfigError(
            f"bad trainer config: {err}. Every trainer.* key is a lightning.Trainer argument; "
            f"check its value (e.g. trainer.max_epochs=10, trainer.devices=1)."
        ) from err


def write_results(run_dir: Path, results: dict[str, Any]) -> Path:
    path = run_dir / RESULTS_FILE
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def run(cfg: DictConfig) -> dict[str, Any]:
    """One training run; returns (and writes) the results.json contents.

    With ``resume=``/``ckpt_path=`` the run continues from a checkpoint (see cnnlab.resume);
    with ``resume_sweep=true`` a sweep job that already finished is skipped."""
    global _runs_in_this_process
    start = time.perf_counter()
    _runs_in_this_process += 1
    plan = plan_run(cfg)
    if plan.previous_results is not None:
        return _skip_finished_job(plan)
    cfg = plan.cfg
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    _check_optimizer(cfg)
    _check_trainer(cfg)
    model = check_image_size(cfg)
    if plan.checkpoint is not None:
        check_checkpoint_fits(plan.checkpoint, model, cfg, plan.checkpoint_path)
    try:
        datamodule = instantiate(cfg.dataset)
    except Exception as err:
        raise ConfigError(f"bad dataset config: {err.__cause__ or err}") from err
    params = sum(p.numel() for p in model.parameters())
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    lit = LitClassifier(
        model,
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
        label_smoothing=cfg.loss.label_smoothing,
        aux_weight=cfg.loss.aux_weight,
        cuda_graphs=bool(cfg.get("cuda_graphs")),
        compile=bool(cfg.get("compile")),
    )
    if _runs_in_this_process > 1:  # a later job of a sweep: its start-up began with run()
        lit.job_started_at = start
    checkpointing = RunCheckpointing(
        cfg, run_dir, checkpoint_meta(cfg, plan.overrides, plan.choices)
    )
    trainer = make_trainer(cfg, run_dir, [checkpointing])
    _check_cuda_graphs(cfg, trainer)
    if trainer.logger is not None:
        trainer.logger.log_hyperparams(flat_hparams(cfg), metrics={"hp_metric": 0.0})

    results: dict[str, Any] = {"status": "ok"}
    resumed_from = plan.resumed_from()
    plan.checkpoint = None  # Lightning reads the file itself; free this copy first
    try:
        with warnings.catch_warnings():
            # Continuing a run writes into its own, non-empty checkpoints/ on purpose.
            warnings.filterwarnings("ignore", message="Checkpoint directory .* not empty")
            # Lightning 2.6 builds torch's LeafSpec, which torch 2.14 deprecates: a FutureWarning
            # about Lightning's internals, twice a run, that a user can do nothing about.
            warnings.filterwarnings(
                "ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning
            )
            trainer.fit(
                lit, datamodule=datamodule, ckpt_path=plan.checkpoint_path, weights_only=True
            )
            if cfg.get("test", True):
                trainer.test(lit, datamodule=datamodule, verbose=False)
    except DivergedError as err:
        results.update(
            status="diverged", error=str(err), diverged_epoch=err.epoch, diverged_step=err.step
        )
    except SIGTERMException:
        results.update(
            status="interrupted",
            error=f"SIGTERM received at epoch {trainer.current_epoch}, step {trainer.global_step}",
            checkpoint=str(checkpointing.interrupted_checkpoint),
        )

    last = {key: values[-1] for key, values in lit.history.items() if values}
    writer = checkpoint_writer(trainer)
    results.update(
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
        wall_s=round(time.perf_counter() - start, 2),
        # Where the wall time went (the rest: start-up, test, sanity check, set-up).
        train_s=round(lit.train_seconds, 2),
        val_s=round(lit.val_seconds, 2),
        checkpoint_s=round(writer.seconds, 3) if writer is not None else None,
        device=device_description(trainer.strategy.root_device),
        world_size=trainer.world_size,
        global_batch_size=cfg.dataset.batch_size * trainer.world_size,
        history=lit.history,
        tensorboard_dir=trainer.logger.log_dir if trainer.logger else None,
        overrides=plan.overrides,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    if resumed_from is not None:
        results["resumed_from"] = resumed_from
    for callback in trainer.callbacks:
        if hasattr(callback, "results_extras"):
            results.update(callback.results_extras())
    if trainer.is_global_zero:
        path = write_results(run_dir, results)
        _print_summary(results, path)
    return results


def _skip_finished_job(plan: RunPlan) -> dict[str, Any]:
    results = plan.previous_results or {}
    print(
        f"resume_sweep: job in {plan.cfg.paths.output_dir} already finished "
        f"({results.get('status')}): skipped"
    )
    return results


def _print_summary(results: dict[str, Any], path: Path) -> None:
    from rich.console import Console

    console = Console()
    acc, epochs = results["test_acc"], results["epochs_completed"]
    console.print(
        f"[bold]{results['status']}[/bold]: test_acc="
        f"{'n/a' if acc is None else f'{acc:.4f}'}, best val_acc="
        f"{results['val_acc'] if results['val_acc'] is None else round(results['val_acc'], 4)}, "
        f"{epochs} epoch{'' if epochs == 1 else 's'} in {results['wall_s']:.0f} s "
        f"({results['train_images_per_s']:.0f} train images/s on {results['device']})"
    )
    console.print(f"results:     {path}")
    if results["tensorboard_dir"]:
        console.print(f"TensorBoard: tensorboard --logdir {results['tensorboard_dir']}")
    if results["status"] == "diverged":
        console.print(f"diverged:    {results['error']}")
    if results["status"] == "interrupted":
        console.print(
            f"interrupted: {results['error']}; checkpoint {results['checkpoint']}. Continue "
            f"with: cnnlab-train resume={path.parent}"
        )


def record_failure(cfg: DictConfig, err: BaseException) -> None:
    """A failed run still leaves results.json (status failed) and traceback.txt behind.

    Nothing already there is lost: the traceback is appended, a results.json that records an
    earlier run's outcome (finished or interrupted) is kept, and a user error against such a run's
    directory (a bad resume= command) writes nothing there at all."""
    try:
        run_dir = Path(cfg.paths.output_dir)
    except Exception:  # noqa: BLE001 - the config itself may be what failed
        return
    results_path = run_dir / RESULTS_FILE
    earlier_outcome = (
        results_path.exists() and (read_results(run_dir) or {}).get("status") != "failed"
    )
    if earlier_outcome and isinstance(err, USER_ERRORS):
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / TRACEBACK_FILE, "a") as f:
        f.write(f"--- {datetime.now().isoformat(timespec='seconds')}\n")
        f.write("".join(traceback.format_exception(err)))
    if earlier_outcome:
        return
    write_results(
        run_dir,
        {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "overrides": run_overrides(),
        },
    )


@hydra.main(
    version_base="1.3", config_path=str(resolvers.project_root() / "conf"), config_name="train"
)
def main(cfg: DictConfig) -> float | None:
    if is_multirun() and not is_extra_ddp_process():
        from hydra.core.hydra_config import HydraConfig

        # Inherited by the DDP processes Lightning starts: see follow_rank_zero_sweep.
        os.environ[SWEEP_DIR_ENV] = str(HydraConfig.get().sweep.dir)
    try:
        results = run(cfg)
    except Exception as err:
        record_failure(cfg, err)
        message = str(err) if isinstance(err, USER_ERRORS) else f"{type(err).__name__}: {err}"
        if is_multirun():  # one bad job must not end a sweep; the sweep summary reports it
            print(f"job failed: {message}\n(details: {_run_dir_text(cfg)})")
            return None
        if isinstance(err, USER_ERRORS):
            print(f"error: {message}")
            raise SystemExit(1) from None
        raise
    if results.get("status") == "interrupted" and is_multirun():
        # The process is being stopped (SLURM preemption): no further job may start.
        from hydra.core.hydra_config import HydraConfig

        sweep_dir = HydraConfig.get().sweep.dir
        print(
            f"sweep interrupted by SIGTERM. Continue it with the same command plus "
            f"resume_sweep=true hydra.sweep.dir={sweep_dir}"
        )
        raise SystemExit(0)
    return results.get("val_acc")  # what Hydra sweepers (Optuna) optimise


def _run_dir_text(cfg: DictConfig) -> str:
    try:
        return str(cfg.paths.output_dir)
    except Exception:  # noqa: BLE001 - the config itself may be what failed
        return "the job's run dir"


# Config choices that need a Hydra plugin from an optional extra: (override, plugin, extra).
PLUGIN_EXTRAS = (
    ("hparams_search=", "hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ("hydra/launcher=slurm", "hydra_plugins.hydra_submitit_launcher", "slurm"),
)


def _importable(module: str) -> bool:
    # find_spec imports the parent packages first and raises when one is missing: where no Hydra
    # plugin is installed at all, there is no hydra_plugins package.
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def plugin_installed(extra: str) -> bool:
    """Whether the Hydra plugin of an optional extra (PLUGIN_EXTRAS: optuna, slurm) is installed."""
    return all(_importable(module) for _, module, name in PLUGIN_EXTRAS if name == extra)


def missing_plugin(args: list[str]) -> str | None:
    """The install hint for a plugin the command line needs and this environment lacks (Hydra's
    own message only lists the options it found), or None."""
    for prefix, module, extra in PLUGIN_EXTRAS:
        needed = any(a.startswith(prefix) and not a.endswith("=null") for a in args)
        if needed and not _importable(module):
            return (
                f"{prefix.rstrip('=')} needs Hydra's {module.split('.')[-1]} plugin, an optional "
                f"extra: make install-{extra} (or pip install 'cnnlab[{extra}]')"
            )
    return None


def follow_rank_zero_sweep(args: list[str]) -> list[str]:
    """The command line of an extra DDP process of a ``-m`` sweep, in rank 0's sweep dir.

    Lightning starts ranks 1.. of a local DDP run by running the same command again, ``-m`` and
    all, and each such process steps through the same jobs as rank 0. Left alone, Hydra would
    date its sweep dir by its own (later) start and scatter its logs into a second sweep dir;
    rank 0 exports its sweep dir, the extra processes use it.
    """
    sweep_dir = os.environ.get(SWEEP_DIR_ENV)
    if not (sweep_dir and is_extra_ddp_process() and ({"-m", "--multirun"} & set(args))):
        return args
    kept = [a for a in args if not a.startswith("hydra.sweep.dir=")]
    return [*kept, f'hydra.sweep.dir="{sweep_dir}"']


def cli() -> None:
    """The ``cnnlab-train`` console script."""
    hint = missing_plugin(sys.argv[1:])
    if hint:
        print(f"error: {hint}", file=sys.stderr)
        raise SystemExit(2)
    sys.argv[1:] = follow_rank_zero_sweep(sys.argv[1:])
    keep_freed_memory()  # before training allocates anything: see cnnlab.allocator
    main()


if __name__ == "__main__":
    cli()
