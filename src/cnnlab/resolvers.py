"""OmegaConf resolvers the configs use. Registered on import of cnnlab's entry points."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def project_root() -> Path:
    """The checkout this package runs from (the folder with pyproject.toml above ``src/``),
    or the working directory for a non-editable install."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "conf").is_dir():
            return parent
    return Path.cwd()


def register() -> None:
    if not OmegaConf.has_resolver("cnnlab_root"):
        OmegaConf.register_new_resolver("cnnlab_root", lambda: str(project_root()))
    # conf/hydra/default.yaml's run dir uses the resume resolvers: every entry point needs them.
    # cnnlab.resume imports Lightning (seconds), so it is imported only when they are resolved.
    if not OmegaConf.has_resolver("cnnlab_run_dir"):
        OmegaConf.register_new_resolver("cnnlab_run_dir", _run_dir)
    if not OmegaConf.has_resolver("cnnlab_hydra_subdir"):
        OmegaConf.register_new_resolver("cnnlab_hydra_subdir", _hydra_subdir)


def _run_dir(resume: str | None, ckpt_path: str | None, default: str) -> str:
    from cnnlab.resume import run_dir_resolver

    return run_dir_resolver(resume, ckpt_path, default)


def _hydra_subdir(resume: str | None, ckpt_path: str | None) -> str | None:
    from cnnlab.resume import hydra_subdir_resolver

    return hydra_subdir_resolver(resume, ckpt_path)


register()
