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
    from cnnlab.resume import register_resolvers

    register_resolvers()


register()
