"""Where a run keeps its checkpoints, which run a checkpoint belongs to, and where a continued
run writes (the Hydra resolvers ``cnnlab_run_dir`` and ``cnnlab_hydra_subdir`` of
conf/hydra/default.yaml). Paths only: Hydra resolves these before anything heavy is imported."""

from __future__ import annotations

from pathlib import Path

from cnnlab.errors import ConfigError

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest ``last*.ckpt`` of a run (Lightning writes ``last-v1.ckpt`` when a run dir was
    moved), or None."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return None
    candidates = sorted(folder.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def find_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint that stands for a finished run: its best one (the newest if several), else
    its ``last.ckpt``; a ConfigError where it has neither (cnnlab-visualize, cnnlab-eval)."""
    folder = checkpoint_dir(run_dir)
    best = sorted(
        folder.glob("best-*.ckpt"), key=lambda p: (p.stat().st_mtime, p.name), reverse=True
    )
    if best:
        return best[0]
    if (folder / LAST).is_file():
        return folder / LAST
    raise ConfigError(
        f"no checkpoint in {folder}: a training run writes checkpoints/last.ckpt there at the "
        "end of every epoch. Give the directory of a run that finished an epoch, or the path of "
        "a .ckpt file."
    )


def run_dir_of(ckpt_path: str | Path) -> Path | None:
    """The run a checkpoint file belongs to (``<run>/checkpoints/x.ckpt``), or None."""
    path = Path(ckpt_path)
    return path.parent.parent if path.parent.name == CHECKPOINT_DIR else None


def continued_run_dir(resume: str | None, ckpt_path: str | None) -> Path | None:
    """The run directory a ``resume=``/``ckpt_path=`` continues in place, if it is a valid one."""
    if resume and last_checkpoint(resume) is not None:
        return Path(resume)
    if ckpt_path and Path(ckpt_path).is_file():
        return run_dir_of(ckpt_path)
    return None


def run_dir_resolver(resume: str | None, ckpt_path: str | None, default: str) -> str:
    # An invalid resume= falls back to a fresh run dir: the error is recorded there, and the
    # directory the user named is left exactly as it was.
    continued = continued_run_dir(resume, ckpt_path)
    return str(continued) if continued is not None else default


def hydra_subdir_resolver(resume: str | None, ckpt_path: str | None) -> str | None:
    # null: Hydra writes no .hydra/ snapshot, so the continued run keeps its original one.
    return None if continued_run_dir(resume, ckpt_path) is not None else ".hydra"
