"""``cnnlab-train``: compose the config, build model + data + LitClassifier, fit, test, and
write ``results.json`` into the run directory.

    cnnlab-train                                    # the course recipe: experiment=lenet
    cnnlab-train model=lenet ablation=[relu,max_pool] optimizer.lr=0.1
    cnnlab-train -m model=vgg11,vgg16               # a sweep under outputs/multirun/
    cnnlab-train resume=outputs/runs/<date>/<time>  # continue a run in place (cnnlab.runs.resume)

A run that diverges ends normally with ``status: diverged``; any other failure leaves
``results.json`` (``status: failed``) and ``traceback.txt`` in the run dir. Inside a ``-m`` sweep a
failed job does not stop the sweep; the sweep's summary (cnnlab.runs.sweep) exits non-zero.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from cnnlab.errors import USER_ERRORS
from cnnlab.resolvers import config_dir
from cnnlab.runs import sweep
from cnnlab.runs.checkpoints import RunCheckpointing, checkpoint_callbacks, checkpoint_meta
from cnnlab.runs.rebuild import refuse_pickled_rerun
from cnnlab.runs.results import (
    print_summary,
    record_failure,
    run_description,
    training_results,
    write_results,
)
from cnnlab.runs.resume import plan_run, run_overrides
from cnnlab.runs.rundir import claim_run_dir, is_global_rank_zero, release_run_dir
from cnnlab.training.allocator import keep_freed_memory
from cnnlab.training.build import build_checked_model, build_datamodule, build_lit
from cnnlab.training.trainer import fit_and_test, log_lightning_to_the_run_log, make_trainer

log = logging.getLogger("cnnlab")
_runs_in_this_process = 0  # sweeps run their jobs one after another in one process


def run(cfg: DictConfig) -> dict[str, Any]:
    """One training run; returns (and writes) the results.json contents.

    With ``resume=``/``ckpt_path=`` the run continues from a checkpoint (cnnlab.runs.resume);
    with ``resume_sweep=true`` a sweep job that already finished is skipped."""
    global _runs_in_this_process
    started = time.perf_counter()
    _runs_in_this_process += 1
    plan = plan_run(cfg)
    if plan.previous_results is not None:
        log.info(
            f"resume_sweep: job in {plan.cfg.paths.output_dir} already finished "
            f"({plan.previous_results.get('status')}): skipped"
        )
        return plan.previous_results
    cfg, run_dir = plan.cfg, Path(plan.cfg.paths.output_dir)
    claim_run_dir(run_dir)  # one run per directory; refused where another process runs in it
    run_dir.mkdir(parents=True, exist_ok=True)

    # Build: every config error surfaces here, before anything trains.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_checked_model(cfg)
    plan.check_can_continue(model)
    datamodule = build_datamodule(cfg)
    params = sum(p.numel() for p in model.parameters())
    lit = build_lit(cfg, model)
    log.info(run_description(cfg, params, plan.overrides))
    if _runs_in_this_process > 1:  # a later job of a sweep: its start-up began with run()
        lit.job_started_at = started
    run_state = RunCheckpointing(cfg, run_dir, checkpoint_meta(cfg, plan.overrides, plan.choices))
    trainer = make_trainer(cfg, run_dir, [*checkpoint_callbacks(cfg, run_dir), run_state])

    # Fit and test.
    resumed_from = plan.resumed_from()
    plan.checkpoint = None  # Lightning reads the file itself; free this copy first
    outcome = fit_and_test(
        trainer, lit, datamodule, ckpt_path=plan.checkpoint_path, test=cfg.get("test", True)
    )
    if outcome["status"] == "interrupted":
        outcome["checkpoint"] = str(run_state.interrupted_checkpoint)

    # Write the results.
    results = outcome | training_results(
        cfg, trainer, lit, started=started, params=params, overrides=plan.overrides
    )
    if resumed_from is not None:
        results["resumed_from"] = resumed_from
    if trainer.is_global_zero:
        print_summary(results, write_results(run_dir, results))
    release_run_dir()
    return results


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    log_lightning_to_the_run_log()
    sweep.export_sweep_dir()
    try:
        results = run(cfg)
    except Exception as err:
        run_dir = _run_dir(cfg)
        # Rank 0 keeps the record; the other ranks of a torchrun/SLURM launch would overwrite it.
        recorded = (
            is_global_rank_zero()
            and run_dir is not None
            and record_failure(run_dir, err, run_overrides())
        )
        report = log.error if recorded else print  # print: not into another run's train.log
        message = str(err) if isinstance(err, USER_ERRORS) else f"{type(err).__name__}: {err}"
        if sweep.is_multirun():  # one bad job must not end a sweep; the sweep summary reports it
            report(f"job failed: {message}\n(details: {run_dir or 'the job directory'})")
            return None
        if isinstance(err, USER_ERRORS):
            report(f"error: {message}")
            raise SystemExit(1) from None
        raise
    if results.get("status") == "interrupted" and sweep.is_multirun():
        sweep.stop_interrupted_sweep()
    return results.get("val_acc")  # what Hydra sweepers (Optuna) optimise


def _run_dir(cfg: DictConfig) -> Path | None:
    try:
        return Path(cfg.paths.output_dir)
    except Exception:  # noqa: BLE001 - the config itself may be what failed
        return None


def cli() -> None:
    """The ``cnnlab-train`` console script."""
    refuse_pickled_rerun(sys.argv[1:])  # Hydra's --experimental-rerun unpickles a run's file
    hint = sweep.missing_plugin(sys.argv[1:])
    if hint:
        print(f"error: {hint}", file=sys.stderr)
        raise SystemExit(2)
    sys.argv[1:] = sweep.follow_rank_zero_sweep(sys.argv[1:])
    keep_freed_memory()  # before training allocates anything: see cnnlab.training.allocator
    main()


if __name__ == "__main__":
    cli()
