"""Where the project's configs are, and the OmegaConf resolvers they use. Registered on import:
every entry point imports this module before Hydra composes a config."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from cnnlab.runs.rundir import hydra_subdir_resolver, run_dir_resolver
from cnnlab.runs.sweep import job_label


def project_root() -> Path:
    """The checkout this package runs from (the folder with pyproject.toml above ``src/``),
    or the working directory for a non-editable install."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "conf").is_dir():
            return parent
    return Path.cwd()


def config_dir() -> Path:
    return project_root() / "conf"


def config_groups() -> set[str]:
    """The config groups of conf/ (model, dataset, ablation, experiment, ...)."""
    conf = config_dir()
    return {p.name for p in conf.iterdir() if p.is_dir()} if conf.is_dir() else set()


def register() -> None:
    if not OmegaConf.has_resolver("cnnlab_root"):
        OmegaConf.register_new_resolver("cnnlab_root", lambda: str(project_root()))
    # conf/hydra/default.yaml: a resumed run writes into the run directory it continues.
    if not OmegaConf.has_resolver("cnnlab_run_dir"):
        OmegaConf.register_new_resolver("cnnlab_run_dir", run_dir_resolver)
    # conf/logger/tensorboard.yaml: a sweep job's runs are named by what tells them apart.
    if not OmegaConf.has_resolver("cnnlab_job_label"):
        OmegaConf.register_new_resolver("cnnlab_job_label", job_label)
    if not OmegaConf.has_resolver("cnnlab_hydra_subdir"):
        OmegaConf.register_new_resolver("cnnlab_hydra_subdir", hydra_subdir_resolver)


register()
