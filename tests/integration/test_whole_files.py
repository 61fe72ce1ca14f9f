"""No file is ever half-written, and a failed write fails the run (issue 19, section 2).

Checkpoints are written as a temporary file beside their final name, fsynced, then renamed
(cnnlab.runs.checkpoints.AtomicCheckpointIO): a kill or a full disk keeps the previous file.
A checkpoint that cannot be written ends the run with one paragraph, and so does a checkpoint or
run directory that cannot be written at all, found before anything trains, under DDP too.

Read-only directories: as root, file modes do not stop a write, so the tests make a directory
immutable (chattr +i) there, and skip where neither works."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from cli_runner import run_cli
from cnnlab.runs.checkpoints import AtomicCheckpointIO
from cnnlab.runs.files import atomic_write

QUICK = [
    "dataset.train_subset=500",
    "dataset.val_size=200",
    "dataset.test_subset=200",
    "++trainer.limit_train_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
EXE = Path(sys.executable).with_name("cnnlab-train")


def can_write_into(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` unwritable for this process (and its children) while the block runs."""
    folder.chmod(0o555)
    immutable = False
    if can_write_into(folder):  # root: modes are not enforced
        chattr = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        immutable = chattr.returncode == 0
        if not immutable or can_write_into(folder):
            folder.chmod(0o755)
            pytest.skip("cannot make a read-only directory on this machine")
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def assert_one_paragraph(code: int, output: str, *fragments: str) -> None:
    assert code == 1, output
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, output


def loads_weights_only(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# --- the writer -----------------------------------------------------------------------------------


def test_a_checkpoint_is_written_beside_its_name_never_in_tmpdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # $TMPDIR is where Lightning's own save puts its temporary file; a tmpfs /tmp is another
    # filesystem, where the final "move" is a copy.
    elsewhere = tmp_path / "tmpdir"
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    monkeypatch.setattr("tempfile.tempdir", None)
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def replace(src, dst) -> None:
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "run" / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)

    assert loads_weights_only(target)["state_dict"]["w"].tolist() == [1.0, 1.0, 1.0]
    assert [(src.parent, dst) for src, dst in renames] == [(target.parent, target)]
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no temp left
    assert target.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # not mkstemp's 0600


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_write_that_fails_midway_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"the previous checkpoint")
    with pytest.raises(OSError), atomic_write(target) as f:
        f.write(b"half of a new one")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


# --- a failed write fails the run -----------------------------------------------------------------


class FillsUp:
    """A file on a disk that fills up: it takes a few kilobytes, then every write fails. (torch.save
    reports that as a RuntimeError raised while handling the OSError.)"""

    def __init__(self, f) -> None:
        self.f = f
        self.written = 0

    def write(self, data) -> int:
        if self.written > 4096:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def test_a_full_disk_during_a_checkpoint_write_fails_the_run_and_keeps_the_last_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while the second epoch's last.ckpt is written: the run ends failed with one
    paragraph, and the first epoch's last.ckpt is still there, whole, and resumable."""
    real_save = torch.save
    last_writes: list[str] = []

    def save(obj, f, *args, **kwargs) -> None:
        name = str(getattr(f, "name", ""))
        if "last.ckpt" in name:
            last_writes.append(name)
            if len(last_writes) == 2:
                f = FillsUp(f)
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run_dir = tmp_path / "run"
    code, output = run_cli([*QUICK, "trainer.max_epochs=3", f"hydra.run.dir={run_dir}"], capsys)

    last = run_dir / "checkpoints" / "last.ckpt"
    assert_one_paragraph(
        code, output, f"could not write the checkpoint {last}: the disk is full",
        f"resume={run_dir}",
    )  # fmt: skip
    assert loads_weights_only(last)["epoch"] == 0  # the first epoch's, whole
    assert not list((run_dir / "checkpoints").glob(".*tmp"))  # the half-written one is gone
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "the disk is full" in results["error"]

    monkeypatch.setattr(torch, "save", real_save)
    code, output = run_cli([f"resume={run_dir}"], capsys)
    assert code == 0, output
    assert json.loads((run_dir / "results.json").read_text())["epochs_completed"] == 3


# cnnlab-train whose disk fills during the second write of last.ckpt. Lightning runs the same
# script again for rank 1 of a DDP run; only rank 0 writes checkpoints.
DISK_FILLS = """
import errno, torch
from cnnlab.cli import train

real_save, last_writes = torch.save, []

def save(obj, f, *args, **kwargs):
    if "last.ckpt" in str(getattr(f, "name", "")):
        last_writes.append(f.name)
        if len(last_writes) == 2:
            f.write(b"the first bytes of a checkpoint")
            f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
    real_save(obj, f, *args, **kwargs)

torch.save = save
train.cli()
"""


def test_a_full_disk_under_ddp_ends_every_rank_with_rank_zeros_message(tmp_path: Path) -> None:
    """Only rank 0 writes; the other ranks wait for it at a barrier. They are ended with it,
    rather than waking up to a lost connection with a traceback of their own that would replace
    the run's recorded error."""
    run_dir = tmp_path / "run"
    script = tmp_path / "disk_fills.py"
    script.write_text(DISK_FILLS)
    command = [sys.executable, str(script), *QUICK, "trainer=ddp_cpu", "trainer.devices=2"]
    done = subprocess.run(
        [*command, "trainer.max_epochs=3", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    output = done.stdout + done.stderr
    last = run_dir / "checkpoints" / "last.ckpt"
    assert_one_paragraph(
        done.returncode, output, f"could not write the checkpoint {last}: the disk is full"
    )
    assert "Connection closed" not in output and "terminated with code" not in output, output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "the disk is full" in results["error"]
    assert loads_weights_only(last)["epoch"] == 0


@pytest.mark.parametrize("processes", [1, 2])
def test_an_unwritable_checkpoint_dir_fails_before_training(tmp_path: Path, processes: int) -> None:
    """Lightning's save swallows a PermissionError: under DDP such a run ended `ok` without a
    single checkpoint. The directory is tried before training, on rank 0."""
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True)
    ddp = ["trainer=ddp_cpu", f"trainer.devices={processes}"] if processes > 1 else []
    with read_only(folder):
        done = subprocess.run(
            [str(EXE), *QUICK, *ddp, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
    output = done.stdout + done.stderr
    assert_one_paragraph(
        done.returncode, output, f"the checkpoint directory {folder} cannot be written",
        "nothing was trained",
    )  # fmt: skip
    assert "epoch 1/1" not in output
    assert json.loads((run_dir / "results.json").read_text())["status"] == "failed"
    assert list(folder.iterdir()) == []


# --- a kill never leaves a partial checkpoint -----------------------------------------------------

# Epochs of one small batch and a big fully connected layer (about 5 M parameters, 20 MB a
# checkpoint): the run spends most of its time writing checkpoints, where the kills land.
KILL_RUN = [
    "model.fc_widths=[2048,2048]",
    "dataset.train_subset=200",
    "dataset.val_size=50",
    "dataset.batch_size=50",
    "++trainer.limit_train_batches=1",
    "trainer.max_epochs=100000",
    "test=false",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "diagnostics.peak_memory=false",
]


def other_filesystem_tmpdir(than: Path) -> dict[str, str]:
    """$TMPDIR on another filesystem where there is one (/dev/shm): where the temporary file of
    Lightning's own save would be copied, not renamed, into place."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != than.stat().st_dev:
        return {"TMPDIR": str(shm)}
    return {}


# cnnlab-train, with the checkpoint writer killing its own process (SIGKILL) in the middle of the
# second write of last.ckpt: the bytes of a checkpoint's start are on disk, the rest never come.
KILLED_MID_WRITE = """
import os, signal, torch
from cnnlab.cli import train

real_save, last_writes = torch.save, []

def save(obj, f, *args, **kwargs):
    if "last.ckpt" in str(getattr(f, "name", "")):
        last_writes.append(f.name)
        if len(last_writes) == 2:
            real_save(obj, f, *args, **kwargs)
            f.truncate(f.tell() // 2)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    real_save(obj, f, *args, **kwargs)

torch.save = save
train.cli()
"""


def test_sigkill_in_the_middle_of_a_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints"
    script = tmp_path / "killed_mid_write.py"
    script.write_text(KILLED_MID_WRITE)
    done = subprocess.run(
        [sys.executable, str(script), *QUICK, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **other_filesystem_tmpdir(tmp_path)},
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, (done.stdout + done.stderr)[-3000:]
    assert len(list(folder.glob(".last.ckpt.*.tmp"))) == 1  # killed mid-write, indeed
    assert loads_weights_only(folder / "last.ckpt")["epoch"] == 0  # the previous one, whole
    for path in folder.glob("*.ckpt"):
        assert "state_dict" in loads_weights_only(path), path

    code, output = run_cli([f"resume={run_dir}"], capsys)
    assert code == 0, output
    assert json.loads((run_dir / "results.json").read_text())["epochs_completed"] == 2
    assert not list(folder.glob(".*.tmp"))  # the killed write's leftover is cleaned up


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_a_partial_checkpoint(tmp_path: Path) -> None:
    """Killed at random moments while it writes checkpoints, and continued with resume= each
    time, a run always has checkpoints that load (and resume from)."""
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **other_filesystem_tmpdir(tmp_path)}
    rng = random.Random(19)
    for attempt in range(4):
        args = KILL_RUN if attempt == 0 else [f"resume={run_dir}"]
        before = (folder / "last.ckpt").stat().st_mtime_ns if attempt else 0
        process = subprocess.Popen(
            [str(EXE), *args, f"hydra.run.dir={run_dir}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        # Once this process wrote its first last.ckpt, wait for its next write to begin (its
        # temporary file appears), then kill it a random moment later: mostly mid-write.
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            last = folder / "last.ckpt"
            if last.exists() and last.stat().st_mtime_ns != before:
                break
            time.sleep(0.005)
        deadline = time.monotonic() + 10
        while not list(folder.glob(".*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.05))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL, process.stdout.read()[-3000:]
        process.stdout.close()
        checkpoints = sorted(folder.glob("*.ckpt"))
        assert any(p.name == "last.ckpt" for p in checkpoints)
        for path in checkpoints:
            assert "state_dict" in loads_weights_only(path), path


# --- output paths that cannot be written ----------------------------------------------------------


@pytest.mark.parametrize(
    "where", ["below a read-only dir", "a read-only dir", "a file", "in a file"]
)
def test_an_unwritable_output_dir_is_one_paragraph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """Hydra creates the run directory and opens train.log in it before cnnlab's code runs; it
    used to end in a 29-line logging-handler traceback."""
    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "file").write_text("not a directory")
    run_dir = {
        "below a read-only dir": locked / "run",
        "a read-only dir": locked,
        "a file": tmp_path / "file",
        "in a file": tmp_path / "file" / "run",
    }[where]
    with read_only(locked):
        code, output = run_cli([*QUICK, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"], capsys)
    expected = "permission denied" if "read-only" in where else f"{tmp_path / 'file'} is a file"
    assert_one_paragraph(
        code, output, f"cannot write into the run directory {run_dir}: {expected}",
        "hydra.run.dir=<dir>",
    )  # fmt: skip
    assert output.count("\n") <= 2, output
    assert (tmp_path / "file").read_text() == "not a directory"


def test_an_unwritable_sweep_dir_is_one_paragraph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    sweep_dir = locked / "sweep"
    with read_only(locked):
        code, output = run_cli(
            ["-m", "seed=0,1", *QUICK, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep_dir}"],
            capsys,
        )
    assert_one_paragraph(
        code, output, f"cannot write into the sweep directory {sweep_dir}: permission denied",
        "hydra.sweep.dir=<dir>",
    )  # fmt: skip
