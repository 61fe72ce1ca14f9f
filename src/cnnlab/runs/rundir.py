"""Where a run keeps its checkpoints, which run a checkpoint belongs to, and where a continued
run writes (the Hydra resolvers ``cnnlab_run_dir`` and ``cnnlab_hydra_subdir`` of
conf/hydra/default.yaml); and one run per directory (claim_run_dir, claim_sweep_dir, the Hydra
callback ClaimRunDir). Standard library and Hydra only: Hydra resolves these before anything
heavy is imported.

One run per directory: a run (or sweep) holds an exclusive ``flock`` on ``<dir>/.cnnlab.lock``
while it runs; the file names the holder (PID, host, start, command) for the message a second run
gets, and is removed when the run ends. The kernel drops the lock when its process dies, even by
SIGKILL, so a killed run never blocks its directory: the file it leaves behind only makes the
next run say that it takes the directory over. Only global rank 0 of a distributed run claims
directories: the other ranks work in rank 0's.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from cnnlab.errors import ConfigError, RunDirError
from cnnlab.runs.files import os_error_reason

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
SWEEP_FILE = "multirun.yaml"  # Hydra's record of a sweep's config, in its directory
LOCK_FILE = ".cnnlab.lock"

log = logging.getLogger("cnnlab")


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


# --- one run per directory ------------------------------------------------------------------------
def is_global_rank_zero() -> bool:
    """False in the processes of a distributed run other than its global rank 0: the ranks
    Lightning starts itself (it sets LOCAL_RANK), torchrun's (RANK), SLURM's (SLURM_PROCID) and
    those of other nodes (NODE_RANK). These work in rank 0's directories and never claim them."""
    names = ("LOCAL_RANK", "RANK", "NODE_RANK", "SLURM_PROCID")
    return all(os.environ.get(name, "0") == "0" for name in names)


class _Lock:
    """An exclusive flock on ``<directory>/.cnnlab.lock``, held through an open descriptor."""

    def __init__(self, directory: Path, fd: int, created: bool) -> None:
        self.directory = directory
        self.fd = fd
        self.created = created  # by this claim: a refused claim leaves no file behind
        self.previous = _read_holder(fd)  # a holder that never released it: a killed run
        self.owner = os.getpid()  # a forked child inherits the descriptor, not the directory

    def take(self, kind: str) -> None:
        """Write this process into the lock file: after the checks, so that a refused command
        changes nothing in the directory."""
        previous = self.previous
        if previous.get("pid") and not _process_alive(previous):
            log.warning(
                f"note: {self.directory} was still marked as in use by {_describe(previous)}; "
                f"that process ended without releasing it (killed?). This {kind} takes the "
                f"directory over."
            )
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        _write_holder(self.fd, holder | {"command": command})
        self.created = True  # it is this process's file now

    def release(self, *, remove: bool = True) -> None:
        """Let go of the directory. The file is removed first, still under the lock (a file
        left behind tells the next holder that this one was killed). Not removed: the earlier
        run of this process that a later one releases (that command has ended with an error;
        its directory stays exactly as it left it)."""
        if os.getpid() != self.owner:
            return
        if remove and self.created:
            with suppress(OSError):
                if _same_file(self.directory / LOCK_FILE, self.fd):
                    os.unlink(self.directory / LOCK_FILE)
        os.close(self.fd)  # drops the flock


_held: dict[Path, _Lock] = {}  # the directories this process holds, by resolved path
_current_run: Path | None = None  # the one run directory among them (a process runs one at a time)


def _key(directory: str | Path) -> Path:
    return Path(directory).resolve()


def _now() -> str:
    return datetime.now().isoformat(sep=" ", timespec="seconds")


def _same_file(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 65536, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _write_holder(fd: int, holder: dict[str, Any]) -> None:
    data = json.dumps(holder).encode() + b"\n"
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))  # after the write: a reader never sees an empty file


def _describe(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "a process whose details could not be read"
    command = str(holder.get("command", ""))
    command = command if len(command) <= 300 else command[:297] + "..."
    return (
        f"PID {holder['pid']} on host {holder.get('host', '?')}, started "
        f"{holder.get('started', '?')}" + (f": {command}" if command else "")
    )


def _process_alive(holder: dict[str, Any]) -> bool:
    """Whether the process a lock file names may still run. Another host's we cannot ask; where
    its flock is free (this is asked only then, or without flock), it is gone."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True
    return True


def _try_flock(fd: int) -> bool:
    """Take the lock; False where another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        # A filesystem without locks (some network and FUSE mounts): trust the PID in the file.
        holder = _read_holder(fd)
        return not holder.get("pid") or not _process_alive(holder)
    return True


def _open_lock_file(lock_path: Path) -> tuple[int, bool]:
    """The lock file's descriptor, and whether this call created the file."""
    while True:
        try:
            return os.open(
                lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
            ), True
        except FileExistsError:
            pass
        try:
            return os.open(lock_path, os.O_RDWR | os.O_CLOEXEC), False
        except FileNotFoundError:  # its holder removed it in between: create it after all
            continue


def _acquire(directory: Path, kind: str) -> _Lock:
    option = "hydra.sweep.dir" if kind == "sweep" else "hydra.run.dir"
    lock_path = directory / LOCK_FILE
    while True:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, created = _open_lock_file(lock_path)
        except OSError as err:
            raise RunDirError(
                f"cannot write into the {kind} directory {directory}: {os_error_reason(err)}. "
                f"Choose a directory you can write to with {option}=<dir>, or leave {option} "
                f"unset for a new one under outputs/ in the project."
            ) from err
        try:
            free = _try_flock(fd)
        except OSError:
            os.close(fd)
            raise
        if not free:
            holder = _read_holder(fd)
            os.close(fd)
            two = "sweeps" if kind == "sweep" else "runs"
            files = "jobs" if kind == "sweep" else "checkpoints, logs and results.json"
            raise RunDirError(
                f"the {kind} directory {directory} is in use by another cnnlab-train: "
                f"{_describe(holder)}. Two {two} in one directory would mix their {files}. Wait "
                f"until it has ended, or give this {kind} a directory of its own: leave {option} "
                f"unset (every {kind} then gets a new one) or choose another."
            )
        # Its last holder removes the file just before letting go: a file opened before that is
        # no longer the lock (another process may already lock a new one). Try again.
        if _same_file(lock_path, fd):
            return _Lock(directory, fd, created)
        os.close(fd)


def _earlier_run(run_dir: Path) -> str | None:
    """What in ``run_dir`` tells that a run already used it, or None."""
    from cnnlab.runs.results import RESULTS_FILE, read_results  # not at import: Hydra's resolvers

    results = read_results(run_dir)
    if results is not None:
        return f"its {RESULTS_FILE} says status {results.get('status', '?')}"
    saved = sorted(checkpoint_dir(run_dir).glob("*.ckpt")) if run_dir.is_dir() else []
    if saved:
        return f"it has checkpoints ({saved[0].name}) but no {RESULTS_FILE}: it was stopped"
    return None


def _refuse_earlier_run(run_dir: Path, cfg: Any) -> None:
    if cfg.get("resume_sweep"):  # skips a finished run, continues or repeats any other
        return
    continued = continued_run_dir(cfg.get("resume"), cfg.get("ckpt_path"))
    if continued is not None and _key(continued) == _key(run_dir):
        return
    earlier = _earlier_run(run_dir)
    if earlier is None:
        return
    if earlier.endswith(("status ok", "status diverged")):
        ways = (
            f", or continue that run in place: cnnlab-train resume={run_dir} (add e.g. "
            f"trainer.max_epochs=20 to train it longer)."
        )
    else:  # failed, interrupted, killed: it may be repeated in place
        resume = (
            f", continue it with cnnlab-train resume={run_dir}" if last_checkpoint(run_dir) else ""
        )
        ways = f"{resume}, or run it again in place: the same command plus resume_sweep=true."
    raise RunDirError(
        f"the run directory {run_dir} holds an earlier run ({earlier}). A new run there would "
        f"overwrite its checkpoints, logs and results. Give the new run a directory of its own "
        f"(leave hydra.run.dir unset for a new one under outputs/, or choose a new path){ways}"
    )


def claim_run_dir(run_dir: str | Path, cfg: Any = None) -> None:
    """Make ``run_dir`` this process's run directory until release_run_dir() (or exit).

    A RunDirError where another process runs in it and, given the run's config (cnnlab-train's
    command line), where it holds an earlier run that the command does not continue (resume=
    or ckpt_path= of that run, or resume_sweep=true). A directory this process holds already is
    its own: claimed again, nothing is checked. Claiming a new run directory releases the
    previous one (a sweep's previous job, or an earlier command of a test process)."""
    global _current_run
    if not is_global_rank_zero():
        return
    key = _key(run_dir)
    if key in _held:
        return
    if _current_run is not None:
        _held.pop(_current_run).release(remove=False)
        _current_run = None
    lock = _acquire(Path(run_dir), "run")
    try:
        if cfg is not None:
            _refuse_earlier_run(Path(run_dir), cfg)
        lock.take("run")
    except BaseException:
        lock.release()
        raise
    _held[key] = lock
    _current_run = key


def release_run_dir() -> None:
    """The run has ended: its directory is free for the next one (resume=, a new command)."""
    global _current_run
    if _current_run is not None:
        _held.pop(_current_run).release()
        _current_run = None


def _earlier_sweep(sweep_dir: Path) -> str | None:
    if not sweep_dir.is_dir():
        return None
    if (sweep_dir / SWEEP_FILE).is_file():
        return f"its {SWEEP_FILE}"
    from cnnlab.runs.results import RESULTS_FILE

    jobs = [
        d.name for d in sweep_dir.iterdir()
        if d.is_dir() and ((d / RESULTS_FILE).is_file() or (d / ".hydra").is_dir())
    ]  # fmt: skip
    if jobs:
        return f"job directories {', '.join(sorted(jobs)[:5])}"
    return _earlier_run(sweep_dir)


def claim_sweep_dir(sweep_dir: str | Path, cfg: Any) -> None:
    """Make ``sweep_dir`` this process's sweep directory until release_sweep_dir() (or exit):
    a RunDirError where another sweep (or run) runs in it, or where it holds an earlier sweep and
    this one is not its continuation (resume_sweep=true). Its jobs claim their own directories."""
    if not is_global_rank_zero():
        return
    key = _key(sweep_dir)
    if key in _held:
        return
    lock = _acquire(Path(sweep_dir), "sweep")
    earlier = None if cfg.get("resume_sweep") else _earlier_sweep(Path(sweep_dir))
    if earlier is not None:
        lock.release()
        raise RunDirError(
            f"the sweep directory {sweep_dir} holds an earlier sweep ({earlier}). A new sweep "
            f"there would overwrite its jobs and mix their results. Give the new sweep a "
            f"directory of its own (leave hydra.sweep.dir unset for a new one under "
            f"outputs/multirun/, or choose a new path), or continue that sweep: the same -m "
            f"command plus resume_sweep=true hydra.sweep.dir={sweep_dir} (finished jobs are "
            f"skipped)."
        )
    lock.take("sweep")
    _held[key] = lock


def release_sweep_dir(sweep_dir: str | Path) -> None:
    lock = _held.pop(_key(sweep_dir), None)
    if lock is not None:
        lock.release()


@atexit.register
def _release_all() -> None:
    # A run that ends with an error (exit status 1) never reaches release_run_dir().
    while _held:
        _held.popitem()[1].release()


def exit_if_refused(err: RunDirError) -> None:
    """How a Hydra callback refuses a directory: the paragraph, exit status 1 (an exception
    there would end in Hydra's stack trace)."""
    print(f"error: {err}", flush=True)
    sys.exit(1)


class ClaimRunDir(Callback):
    """Hydra callback (conf/hydra/default.yaml) of cnnlab-train: the run directory becomes this
    run's before Hydra writes into it. Hydra creates it, opens train.log in it and writes its
    .hydra/ snapshot before the task starts; a second run into a busy or finished directory would
    have appended to the first one's log and overwritten its snapshot by the time run() could
    refuse, and an unwritable directory would end in Hydra's logging-handler traceback. The jobs
    of a sweep are claimed in run() (the sweep directory, in SweepReport, covers them first)."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        try:
            claim_run_dir(str(config.hydra.run.dir), config)
        except RunDirError as err:
            exit_if_refused(err)

    def on_job_end(self, config: Any, **kwargs: Any) -> None:
        release_run_dir()  # a sweep job that failed never reached the release in run()
