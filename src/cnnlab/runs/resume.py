"""Continuing runs where they stopped.

    cnnlab-train resume=<run dir>                 # continue that run in place, with its config
    cnnlab-train resume=<run dir> trainer.max_epochs=20    # ... and train longer
    cnnlab-train ckpt_path=<run dir>/checkpoints/best-epoch=3.ckpt   # from one checkpoint
    cnnlab-train -m <same sweep> resume_sweep=true hydra.sweep.dir=<sweep dir>

``resume=`` and ``ckpt_path=`` take the config from the checkpoint (the config the run started
with, so that a conf/ edited since does not change a continued run), apply the plain
``key=value`` overrides of the new command on top, and write into the run directory the
checkpoint belongs to: the Hydra resolvers of cnnlab.runs.rundir point ``hydra.run.dir`` there
(and switch off Hydra's ``.hydra/`` snapshot, which would overwrite the original one). A
checkpoint may come from anywhere, so its config is checked before it is used
(cnnlab.runs.rebuild.check_stored_config: only the targets and resolvers the project ships), and
so are its recorded overrides and choices.

``resume_sweep=true`` is decided per job of a ``-m`` sweep: a job whose ``results.json`` says ok
(or diverged: a deterministic rerun diverges again) is skipped, a job with a checkpoint continues
from it, any other job runs from the start. The same holds for a single run with a fixed
``hydra.run.dir``, which makes ``cnnlab-train <args> hydra.run.dir=<dir> resume_sweep=true`` a
command a requeued (preempted) SLURM job can simply run again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from cnnlab.errors import ConfigError
from cnnlab.resolvers import config_groups
from cnnlab.runs.checkpoints import (
    META_KEY,
    check_checkpoint_fits,
    load_checkpoint,
    model_label,
)
from cnnlab.runs.rebuild import check_overrides, check_stored_config, checked_meta
from cnnlab.runs.results import FINISHED, read_results
from cnnlab.runs.rundir import SWEEP_FILE, last_checkpoint
from cnnlab.runs.sweep import is_multirun

RESUME_KEYS = ("resume", "ckpt_path", "resume_sweep")
# The sections every run's stored config has, whatever cnnlab version wrote it.
STORED_SECTIONS = ("model", "dataset", "optimizer", "loss", "trainer", "paths")


@dataclass
class RunPlan:
    """What one invocation does: the config to run, the checkpoint to continue from (if any),
    or the results of a sweep job that is already done."""

    cfg: DictConfig
    overrides: list[str] = field(default_factory=list)  # the command that made this run
    choices: dict[str, Any] = field(default_factory=dict)  # Hydra group choices of the run
    checkpoint_path: Path | None = None
    checkpoint: dict[str, Any] | None = None
    previous_results: dict[str, Any] | None = None

    def check_can_continue(self, model: torch.nn.Module) -> None:
        """A ConfigError naming the checkpoint's model when its weights do not fit ``model``,
        or saying that the run has finished every epoch asked for."""
        if self.checkpoint is not None and self.checkpoint_path is not None:
            check_checkpoint_fits(self.checkpoint, model, self.cfg, self.checkpoint_path)
            _check_not_finished(self.cfg)

    def resumed_from(self) -> dict[str, Any] | None:
        if self.checkpoint_path is None or self.checkpoint is None:
            return None
        return {
            "checkpoint": str(self.checkpoint_path),
            "epoch": self.checkpoint.get("epoch"),
            "global_step": self.checkpoint.get("global_step"),
        }


# --- what the command line asked for --------------------------------------------------------------
def hydra_choices() -> dict[str, Any]:
    """The config-group choices of this run (model=lenet, ...), without Hydra's own groups."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = OmegaConf.to_container(HydraConfig.get().runtime.choices, resolve=True)
    return {k: v for k, v in choices.items() if not k.startswith("hydra")}


def hydra_overrides() -> list[str]:
    """The command line's overrides of this run (empty outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def run_overrides(overrides: list[str] | None = None) -> list[str]:
    """The overrides that define a run: the command's, less resume keys (they say how it was
    started, not what it is)."""
    overrides = hydra_overrides() if overrides is None else overrides
    return [o for o in overrides if _override_key(o) not in RESUME_KEYS]


# --- planning ----------------------------------------------------------------------------------
def plan_run(cfg: DictConfig) -> RunPlan:
    """Decide how this invocation runs: fresh, continued from a checkpoint, or skipped; and check
    the config it runs with (check_plan)."""
    return check_plan(_plan(cfg))


def _plan(cfg: DictConfig) -> RunPlan:
    resume, ckpt_path = cfg.get("resume"), cfg.get("ckpt_path")
    if cfg.get("resume_sweep"):
        # Also for one run with a fixed hydra.run.dir: a command a requeued SLURM job can repeat.
        if resume or ckpt_path:
            raise ConfigError(
                "resume_sweep=true finds each job's checkpoint itself: drop resume=/ckpt_path=."
            )
        return _plan_sweep_job(cfg)
    fresh = RunPlan(cfg, run_overrides(), hydra_choices())
    if not resume and not ckpt_path:
        return fresh
    if resume and ckpt_path:
        raise ConfigError("give resume=<run dir> or ckpt_path=<checkpoint file>, not both")
    if is_multirun():
        raise ConfigError(
            "resume=/ckpt_path= continue one run. To continue a sweep, run the same -m command "
            "with resume_sweep=true hydra.sweep.dir=<sweep dir>."
        )
    path = Path(ckpt_path) if ckpt_path else checkpoint_of_run(Path(resume))
    checkpoint = load_checkpoint(path)
    meta = checked_meta(checkpoint, path)
    if not meta or "config" not in meta:  # not written by cnnlab: this command's config decides
        return RunPlan(cfg, fresh.overrides, fresh.choices, path, checkpoint)
    new_cfg, overrides = config_to_continue(cfg, meta, path)
    return RunPlan(new_cfg, overrides, dict(meta.get("choices") or {}), path, checkpoint)


def _check_not_finished(cfg: DictConfig) -> None:
    """A run that finished all the epochs asked for has nothing to continue: resuming it would
    only test it again and overwrite its results.json with the new test's timings."""
    run_dir = Path(cfg.paths.output_dir)
    results = read_results(run_dir) or {}
    epochs, asked = results.get("epochs_completed"), cfg.trainer.get("max_epochs")
    if results.get("status") != "ok" or not isinstance(epochs, int) or not isinstance(asked, int):
        return
    if asked != -1 and epochs >= asked:
        raise ConfigError(
            f"resume={run_dir}: the run already finished (results.json: status ok, "
            f"epochs_completed={epochs}, trainer.max_epochs={asked}), so there is nothing to "
            f"continue and its results stay as they are. To train it "
            f"longer, add trainer.max_epochs=<more than {epochs}>; to test it again, use "
            f"cnnlab-eval run_dir={run_dir}."
        )


def check_plan(plan: RunPlan) -> RunPlan:
    """The plan, once its config passed every check of cnnlab.training.checks.check_config: a bad
    value is one paragraph before anything (the seed included) is set up or built."""
    from cnnlab.training.checks import check_config

    if plan.previous_results is None:  # a finished job that is skipped builds nothing
        check_config(plan.cfg, plan.overrides)
    return plan


def checkpoint_of_run(run_dir: Path) -> Path:
    """The checkpoint ``resume=<run dir>`` continues from, or a ConfigError saying why none."""
    if not run_dir.is_dir():
        raise ConfigError(
            f"resume={run_dir}: no such directory. Give a run directory, e.g. "
            f"outputs/runs/<date>/<time> (the one holding results.json and checkpoints/)."
        )
    found = last_checkpoint(run_dir)
    if found is not None:
        return found
    if (run_dir / SWEEP_FILE).is_file():
        raise ConfigError(
            f"resume={run_dir} is a sweep directory. Continue a sweep by running the same -m "
            f"command with resume_sweep=true hydra.sweep.dir={run_dir}."
        )
    raise ConfigError(
        f"resume={run_dir}: no checkpoint in {run_dir / 'checkpoints'}. A run writes last.ckpt "
        f"at the end of every epoch and on SIGTERM, so this one stopped before its first epoch "
        f"ended, or it is not a run directory. Start the run again without resume=, or point "
        f"ckpt_path= at a .ckpt file."
    )


def config_to_continue(
    cfg: DictConfig, meta: dict[str, Any], path: Path
) -> tuple[DictConfig, list[str]]:
    """The config a checkpoint's run started with, plus this command's ``key=value`` overrides.

    Config-group overrides (model=..., optimizer=...) must agree with the run's choices: a run
    continues with the architecture and recipe it started with. ``meta`` comes from
    checked_meta; the config is checked here again, since it is what gets instantiated."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    stored = check_stored_config(meta["config"], f"checkpoint {path} ({META_KEY} entry)")
    missing = [key for key in STORED_SECTIONS if not isinstance(stored.get(key), dict)]
    if missing:
        raise ConfigError(
            f"checkpoint {path}: its stored config has no {', '.join(missing)} "
            f"section{'s' if len(missing) > 1 else ''}, so the run cannot be continued with it; "
            f"the checkpoint was not written by cnnlab-train or was changed since. Start a new "
            f"run (without resume=/ckpt_path=)."
        )
    new_cfg = OmegaConf.create(stored)
    parser = OverridesParser.create()
    groups = config_groups() | set(hydra_choices())
    old_choices = dict(meta.get("choices") or {})
    old_text = {key: f"{key}={value}" for key, value in old_choices.items()}
    # List groups (ablation=[...]) are not among Hydra's choices: the run's command has them.
    for override in parser.parse_overrides(run_overrides(meta.get("overrides", []))):
        if override.key_or_group in groups:
            old_choices[override.key_or_group] = override.value()
            old_text[override.key_or_group] = override.input_line
    added: list[str] = []
    for override in parser.parse_overrides(run_overrides()):
        key = override.key_or_group
        if key in groups:
            then = old_choices.get(key)
            if then != override.value():
                made_for = old_text.get(key, f"the default {key}")
                if key == "model":
                    made_for = model_label(meta)
                raise ConfigError(
                    f"checkpoint {path} was made for {made_for}; this command asks for "
                    f"{override.input_line}. A run continues with the config it started with: "
                    f"drop {key}=... (plain key=value overrides such as trainer.max_epochs=20 "
                    f"are applied), or start a new run without resume=/ckpt_path=."
                )
            continue
        if override.is_delete():
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(new_cfg, parent) if parent else new_cfg
            if node is not None and leaf in node:
                with open_dict(node):
                    del node[leaf]
        else:
            OmegaConf.update(new_cfg, key, override.value(), merge=False, force_add=True)
        added.append(override.input_line)
    with open_dict(new_cfg):
        for key in RESUME_KEYS:
            new_cfg[key] = cfg.get(key)
        # Hydra resolved this run's directory to the checkpoint's run (or a fresh one).
        new_cfg.paths.output_dir = str(cfg.paths.output_dir)
    OmegaConf.set_struct(new_cfg, True)
    # The run's overrides as one command: a key given again now replaces the earlier value.
    new_keys = {_override_key(o) for o in added}
    previous = [o for o in meta.get("overrides", []) if _override_key(o) not in new_keys]
    return new_cfg, previous + added


def _override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def _plan_sweep_job(cfg: DictConfig) -> RunPlan:
    """resume_sweep=true, one job: skip it if done, continue it if it has a checkpoint."""
    run_dir = Path(cfg.paths.output_dir)
    overrides, choices = run_overrides(), hydra_choices()
    results = read_results(run_dir)
    if results is not None and results.get("status") in FINISHED:
        # The job's results stand for it in the sweep: a results.json that holds what no cnnlab
        # run writes (a foreign _target_, a resolver that builds objects) is not trusted.
        source = str(run_dir / "results.json")
        if results.get("config") is not None:
            check_stored_config(results["config"], source)
        _check_same_job(run_dir, results.get("overrides"), overrides, source)
        return RunPlan(cfg, overrides, choices, previous_results=results)
    found = last_checkpoint(run_dir)
    if found is None:
        return RunPlan(cfg, overrides, choices)
    checkpoint = load_checkpoint(found)
    meta = checked_meta(checkpoint, found) or {}
    if "overrides" in meta:
        _check_same_job(run_dir, meta["overrides"], overrides, f"checkpoint {found}")
    return RunPlan(cfg, overrides, choices, found, checkpoint)


def _check_same_job(run_dir: Path, before: Any, now: list[str], source: str) -> None:
    if before is None:
        return
    before = check_overrides(before, source)  # a list of plain strings, or a ConfigError
    if sorted(run_overrides(before)) == sorted(now):
        return
    raise ConfigError(
        f"resume_sweep: {run_dir} holds a job made with {' '.join(before) or '(no overrides)'}, "
        f"but this job is {' '.join(now) or '(no overrides)'}. A sweep continues only with the "
        f"same -m command (same values, same order) and the same hydra.sweep.dir."
    )
