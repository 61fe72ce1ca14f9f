"""Sweeps (``cnnlab-train -m``): the Hydra callback that checks a resumed sweep's directory before
any job runs and at the end summarises every job's ``results.json`` (exit status 1 if a job
failed), the hints for Hydra plugins of optional extras, and the extra DDP processes that must
follow rank 0's sweep directory.

SweepReport is configured under ``hydra.callbacks`` in conf/hydra/default.yaml. The summary reads
the job directories rather than Hydra's job returns, so it also works for launchers that run jobs
in other processes or on other machines (submitit/SLURM), and for jobs a resumed sweep skipped.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnlab.runs.results import FINISHED, RESULTS_FILE, epoch_text, read_results
from cnnlab.runs.rundir import (
    SWEEP_FILE,
    RunDirError,
    claim_sweep_dir,
    exit_if_refused,
    release_sweep_dir,
)

SWEEP_DIR_ENV = "CNNLAB_SWEEP_DIR"  # rank 0's sweep dir, for the DDP processes it starts
SWEPT_KEYS_ENV = "CNNLAB_SWEPT_KEYS"  # the keys a sweep varies, for its jobs' run labels
# Config choices that need a Hydra plugin from an optional extra: (override, plugin, extra).
PLUGIN_EXTRAS = (
    ("hparams_search=", "hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ("hydra/launcher=slurm", "hydra_plugins.hydra_submitit_launcher", "slurm"),
)


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def is_extra_ddp_process() -> bool:
    """True in the processes Lightning starts for ranks 1.. of a local DDP run (it sets
    LOCAL_RANK for them), and in the non-zero ranks of torchrun or SLURM launches."""
    return os.environ.get("LOCAL_RANK", "0") != "0"


def short_value(value: str) -> str:
    """A float as Optuna samples it (0.06260326907499733) shown with 4 significant digits."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if "." in value and len(value) > 8 else value


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its shortest ending that no other of ``keys`` shares:
    ``optimizer.lr`` -> ``lr``, but ``model.dropout`` and ``dataset.dropout`` stay whole. An
    ending never starts at a list index: ``model.conv_channels.0`` -> ``conv_channels.0``."""

    def ending(key: str, n: int) -> str:
        return ".".join(key.split(".")[-n:])

    short = {}
    for key in keys:
        n = 1
        while n < key.count(".") + 1 and (
            ending(key, n).split(".")[0].isdigit()
            or any(ending(other, n) == ending(key, n) for other in keys if other != key)
        ):
            n += 1
        short[key] = ending(key, n)
    return short


def job_label() -> str:
    """What tells this job of a sweep apart from the others, e.g. ``model=vgg11,lr=0.1`` (the
    resolver ``cnnlab_job_label``: TensorBoard's name for the run); "" outside a sweep."""
    if not is_multirun():
        return ""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    swept = [k for k in os.environ.get(SWEPT_KEYS_ENV, "").split(",") if k]
    if not swept:  # a launcher that did not pass the environment on: every override
        return str(hydra_cfg.job.override_dirname)
    values = {}
    for override in hydra_cfg.overrides.task:
        key, _, value = override.lstrip("+~").partition("=")
        if key in swept:
            values[key] = value
    names = short_keys(list(values))
    return ",".join(f"{names[key]}={short_value(value)}" for key, value in values.items())


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a ``-m`` command varies: its sweep overrides (``model=vgg11,vgg16``) and the
    sweeper's params (an experiment's ``hydra.sweeper.params``, Optuna's search space)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [o.key_or_group for o in parsed if o.is_sweep_override()]
    params = config.hydra.sweeper.get("params") or {}
    return keys + [str(key) for key in params if key not in keys]


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


def export_sweep_dir() -> None:
    """In rank 0 of a sweep: tell the DDP processes Lightning will start where the sweep is."""
    if is_multirun() and not is_extra_ddp_process():
        from hydra.core.hydra_config import HydraConfig

        os.environ[SWEEP_DIR_ENV] = str(HydraConfig.get().sweep.dir)


def follow_rank_zero_sweep(args: list[str]) -> list[str]:
    """The command line of an extra DDP process of a ``-m`` sweep, in rank 0's sweep dir.

    Lightning starts ranks 1.. of a local DDP run by running the same command again, ``-m`` and
    all, and each such process steps through the same jobs as rank 0. Left alone, Hydra would
    date its sweep dir by its own (later) start and scatter its logs into a second sweep dir;
    rank 0 exports its sweep dir (export_sweep_dir), the extra processes use it.
    """
    sweep_dir = os.environ.get(SWEEP_DIR_ENV)
    if not (sweep_dir and is_extra_ddp_process() and ({"-m", "--multirun"} & set(args))):
        return args
    kept = [a for a in args if not a.startswith("hydra.sweep.dir=")]
    return [*kept, f'hydra.sweep.dir="{sweep_dir}"']


def stop_interrupted_sweep() -> None:
    """After a job was interrupted by SIGTERM (SLURM preemption): no further job may start."""
    from hydra.core.hydra_config import HydraConfig

    sweep_dir = HydraConfig.get().sweep.dir
    print(
        f"sweep interrupted by SIGTERM. Continue it with the same command plus "
        f"resume_sweep=true hydra.sweep.dir={sweep_dir}"
    )
    raise SystemExit(0)


@dataclass(frozen=True)
class JobOutcome:
    num: str
    status: str  # ok | diverged | failed | interrupted | missing (no results.json)
    overrides: list[str]
    note: str


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a sweep (Hydra's ``<sweep dir>/<job num>``), in job order."""
    dirs = [d for d in sweep_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    dirs = [d for d in dirs if (d / RESULTS_FILE).is_file() or (d / ".hydra").is_dir()]
    return sorted(dirs, key=lambda d: int(d.name) if d.name.isdigit() else -1)


def job_outcome(job_dir: Path) -> JobOutcome:
    results = read_results(job_dir)
    if results is None or results.get("status") == "unreadable":
        return JobOutcome(
            job_dir.name,
            "missing",
            [],
            f"no readable {RESULTS_FILE}: the job died "
            f"before recording anything (see its log in {job_dir})",
        )
    status = str(results.get("status", "missing"))
    if status == "diverged":
        where = f"{epoch_text(results.get('diverged_epoch'))}, step {results.get('diverged_step')}"
        note = f"diverged at {where}"
    elif status == "ok":
        acc = results.get("test_acc")
        note = f"test_acc={acc:.4f}" if isinstance(acc, int | float) else ""
    else:
        note = str(results.get("error", ""))
    overrides = results.get("overrides")  # a results.json is data: it may hold anything
    if not (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
        overrides = []
    return JobOutcome(job_dir.name, status, overrides, note)


def summarise(sweep_dir: Path) -> tuple[list[JobOutcome], str]:
    """Every job's outcome and the text printed at the end of a sweep."""
    outcomes = [job_outcome(d) for d in job_dirs(sweep_dir)]
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    lines = [
        f"sweep {sweep_dir}: {len(outcomes)} jobs, "
        + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    ]
    # Show what tells the jobs apart, not the overrides they all share.
    shared = set.intersection(*(set(o.overrides) for o in outcomes)) if len(outcomes) > 1 else set()
    for outcome in outcomes:
        if outcome.status != "ok":
            own = [o for o in outcome.overrides if o not in shared] or outcome.overrides
            lines.append(
                f"  job {outcome.num} {outcome.status}: {' '.join(own)}"
                + (f" -- {outcome.note}" if outcome.note else "")
            )
    failed = [o for o in outcomes if o.status not in FINISHED]
    if failed:
        lines.append(
            f"{len(failed)} job(s) did not finish: {', '.join(o.num for o in failed)} "
            f"(results.json and traceback.txt in {sweep_dir}/<job>). After fixing the cause, run "
            f"the same command with resume_sweep=true hydra.sweep.dir={sweep_dir}: finished jobs "
            f"are skipped."
        )
    return outcomes, "\n".join(lines)


def _sweep_arguments(overrides: list[str]) -> list[str]:
    """A sweep's command-line arguments, less those that say how it was started."""
    return [o for o in overrides if not o.startswith(("resume_sweep=", "hydra.sweep.dir="))]


def _check_same_sweep(config: DictConfig, sweep_dir: Path) -> None:
    """resume_sweep=true continues a sweep only with its own arguments: with others, every job
    would refuse its directory, and multirun.yaml (Hydra rewrites it next) would be lost."""
    from omegaconf import OmegaConf

    try:
        before = list(OmegaConf.load(sweep_dir / SWEEP_FILE).hydra.overrides.task)
    except Exception:  # noqa: BLE001 - no readable record: the jobs check their own dirs
        return
    now = list(config.hydra.overrides.task)
    if _sweep_arguments(before) == _sweep_arguments(now):
        return
    print(
        f"error: resume_sweep=true, but {sweep_dir} holds a sweep made with "
        f"{' '.join(_sweep_arguments(before)) or '(no arguments)'}, and this command is "
        f"{' '.join(_sweep_arguments(now)) or '(no arguments)'}. A sweep continues only with the "
        f"same -m arguments (same values, same order); start a new sweep for others (without "
        f"hydra.sweep.dir=)."
    )
    sys.exit(1)


class SweepReport(Callback):
    """Summary of a ``-m`` sweep at its end; exit status 1 when a job failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        os.environ[SWEPT_KEYS_ENV] = ",".join(swept_keys(config))
        if config.get("resume") or config.get("ckpt_path"):
            print(
                "error: resume=/ckpt_path= continue one run, not a sweep. To continue a sweep, "
                "run the same -m command with resume_sweep=true hydra.sweep.dir=<sweep dir>."
            )
            sys.exit(1)
        if config.get("resume_sweep") and not sweep_dir.is_dir():
            print(
                f"error: resume_sweep=true, but the sweep directory {sweep_dir} does not exist. "
                f"Give the directory of the sweep to continue: hydra.sweep.dir="
                f"outputs/multirun/<date>/<time> (printed when it started), with the same -m "
                f"arguments as before."
            )
            sys.exit(1)
        if config.get("resume_sweep"):
            _check_same_sweep(config, sweep_dir)
        try:  # one sweep per directory, taken before Hydra writes into it (cnnlab.runs.rundir)
            claim_sweep_dir(sweep_dir, config)
        except RunDirError as err:
            exit_if_refused(err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        release_sweep_dir(sweep_dir)
        # Rank 0 reports. An extra DDP process replays the sweep in step with rank 0 and ends
        # first: its summary would count rank 0's last job as missing, and its exit status 1
        # would make Lightning's process observer kill rank 0 while it writes that job's results.
        if not sweep_dir.is_dir() or is_extra_ddp_process():
            return
        outcomes, text = summarise(sweep_dir)
        print(text, flush=True)
        if any(o.status not in FINISHED for o in outcomes):
            sys.exit(1)
