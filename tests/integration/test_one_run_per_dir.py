"""One run per directory (issue 19, section 3): a second run or sweep started into a directory
another process is using is refused at once, naming that process, before anything is written
there; a new run into the directory of an earlier one is refused unless it continues it
(resume=, resume_sweep=true); a lock left behind by a killed run is taken over with a note.

The first run or sweep is a real ``cnnlab-train`` subprocess; the second runs in the test process
through the real Hydra entry point."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest

from cli_runner import run_cli
from cnnlab.runs import rundir
from cnnlab.runs.rundir import LOCK_FILE, RunDirError, claim_run_dir, release_run_dir
from cnnlab.training import trainer

EXE = Path(sys.executable).with_name("cnnlab-train")
QUICK = [
    "dataset.train_subset=500",
    "dataset.val_size=200",
    "dataset.test_subset=200",
    "dataset.batch_size=50",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
# Long enough to still run while the test starts a second command into its directory.
LONGER = [*QUICK[:-3], "trainer.max_epochs=3", *QUICK[-2:]]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(EXE), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip


def wait_for_lock(directory: Path, process: subprocess.Popen, also: Path | None = None) -> None:
    """Until ``process`` holds ``directory`` (its PID in the lock file) and ``also`` exists."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()[-3000:]
        try:
            holder = json.loads((directory / LOCK_FILE).read_text())
        except (OSError, ValueError):
            holder = {}
        if holder.get("pid") == process.pid and (also is None or also.exists()):
            return
        time.sleep(0.02)
    raise AssertionError(f"{process.pid} never locked {directory}")


def finish(process: subprocess.Popen) -> str:
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-3000:]
    return output


def files(directory: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def assert_one_paragraph(code: int, output: str, *fragments: str) -> None:
    assert code == 1, output
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, output


# --- two at once ----------------------------------------------------------------------------------


def test_a_second_run_into_a_busy_run_dir_is_refused_and_the_first_is_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    first = start(["seed=1", *LONGER, f"hydra.run.dir={run_dir}"])
    try:
        wait_for_lock(run_dir, first, also=run_dir / ".hydra" / "overrides.yaml")
        snapshot = (run_dir / ".hydra" / "overrides.yaml").read_bytes()
        code, output = run_cli([*QUICK, "seed=2", f"hydra.run.dir={run_dir}"], capsys)
        assert first.poll() is None, "the first run ended before the second one started"
    finally:
        log = finish(first)
    assert_one_paragraph(
        code, output, f"the run directory {run_dir} is in use by another cnnlab-train",
        f"PID {first.pid} on host {socket.gethostname()}", "seed=1", "hydra.run.dir",
    )  # fmt: skip
    # Nothing of the second command reached the first run's files.
    assert (run_dir / ".hydra" / "overrides.yaml").read_bytes() == snapshot
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and "seed=1" in results["overrides"]
    assert "in use by" not in (run_dir / "train.log").read_text()
    assert "in use by" not in log


def test_a_second_sweep_into_a_busy_sweep_dir_is_refused_before_any_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_dir = tmp_path / "sweep"
    first = start(["-m", "seed=1,2", *QUICK, f"hydra.sweep.dir={sweep_dir}"])
    try:
        wait_for_lock(sweep_dir, first)
        code, output = run_cli(["-m", "seed=3,4", *QUICK, f"hydra.sweep.dir={sweep_dir}"], capsys)
        assert first.poll() is None, "the first sweep ended before the second one started"
    finally:
        summary = finish(first)
    assert_one_paragraph(
        code, output, f"the sweep directory {sweep_dir} is in use by another cnnlab-train",
        f"PID {first.pid}", "hydra.sweep.dir",
    )  # fmt: skip
    assert "2 jobs, 2 ok" in summary
    assert sorted(d.name for d in sweep_dir.iterdir() if d.is_dir()) == ["0", "1"]
    for job, seed in (("0", "seed=1"), ("1", "seed=2")):
        assert seed in json.loads((sweep_dir / job / "results.json").read_text())["overrides"]

    # Finished, it is still that sweep's: only its continuation may use the directory.
    before = files(sweep_dir)
    code, output = run_cli(["-m", "seed=3,4", *QUICK, f"hydra.sweep.dir={sweep_dir}"], capsys)
    assert_one_paragraph(
        code, output, f"the sweep directory {sweep_dir} holds an earlier sweep",
        "resume_sweep=true",
    )  # fmt: skip
    assert files(sweep_dir) == before
    code, output = run_cli(
        ["-m", "seed=1,2", *QUICK, f"hydra.sweep.dir={sweep_dir}", "resume_sweep=true"], capsys
    )
    assert code == 0, output
    assert output.count("already finished (ok): skipped") == 2


# --- a directory that holds a run -----------------------------------------------------------------


def test_a_new_run_into_a_finished_runs_dir_is_refused_but_it_may_continue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    code, output = run_cli([*QUICK, f"hydra.run.dir={run_dir}"], capsys)
    assert code == 0, output
    before = files(run_dir)

    code, output = run_cli([*QUICK, "optimizer.lr=0.1", f"hydra.run.dir={run_dir}"], capsys)
    assert_one_paragraph(
        code, output, f"the run directory {run_dir} holds an earlier run",
        "results.json says status ok", f"cnnlab-train resume={run_dir}",
    )  # fmt: skip
    assert files(run_dir) == before  # not even train.log or .hydra/ got a line

    code, output = run_cli([*QUICK, f"hydra.run.dir={run_dir}", "resume_sweep=true"], capsys)
    assert code == 0 and "already finished (ok): skipped" in output, output
    code, output = run_cli([f"resume={run_dir}", "trainer.max_epochs=2"], capsys)
    assert code == 0, output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and results["epochs_completed"] == 2


class SigtermAtBatch(L.Callback):
    """SLURM's notice before preemption, from inside the run: SIGTERM mid-epoch."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == 2:
            os.kill(os.getpid(), signal.SIGTERM)


def test_an_interrupted_run_continues_with_resume_but_is_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    real_callbacks = trainer.diagnostic_callbacks
    monkeypatch.setattr(
        trainer, "diagnostic_callbacks", lambda cfg: [*real_callbacks(cfg), SigtermAtBatch()]
    )
    code, output = run_cli([*QUICK, f"hydra.run.dir={run_dir}"], capsys)
    assert code == 0, output
    assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(trainer, "diagnostic_callbacks", real_callbacks)

    code, output = run_cli([*QUICK, f"hydra.run.dir={run_dir}"], capsys)
    assert_one_paragraph(
        code, output, "holds an earlier run (its results.json says status interrupted)",
        f"resume={run_dir}", "resume_sweep=true",
    )  # fmt: skip
    code, output = run_cli([f"resume={run_dir}"], capsys)
    assert code == 0, output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and results["resumed_from"]["global_step"] == 3


# --- locks left behind, and the other ranks of a DDP run ------------------------------------------


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pid = dead_pid()
    left = {"pid": pid, "host": socket.gethostname(), "started": "2020-01-01 00:00:00"}
    (run_dir / LOCK_FILE).write_text(json.dumps(left | {"command": "cnnlab-train seed=7"}))

    code, output = run_cli([*QUICK, f"hydra.run.dir={run_dir}"], capsys)
    assert code == 0, output
    assert f"was still marked as in use by PID {pid}" in output
    assert "ended without releasing it" in output
    assert not (run_dir / LOCK_FILE).exists()  # released at the run's end


def test_a_lock_held_by_a_live_process_is_respected_by_claim_run_dir(tmp_path: Path) -> None:
    """The lock itself, without a training: a process that holds it (a `sleep` that inherited
    the locked descriptor) keeps any other out, whatever the file says."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=f"PID {holder.pid} on host"):
            claim_run_dir(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    claim_run_dir(tmp_path)  # its process is gone: the kernel dropped the lock
    release_run_dir()


HOLD_LOCK = """
import sys, time
from cnnlab.runs.rundir import claim_run_dir
claim_run_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "RANK", "SLURM_PROCID"])
def test_the_other_ranks_of_a_distributed_run_claim_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """Lightning starts ranks 1.. by running the same command again, into rank 0's run dir,
    which rank 0 holds: they must not be refused, nor take a lock."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setenv(variable, "1")
        assert not rundir.is_global_rank_zero()
        claim_run_dir(tmp_path, {"resume_sweep": False})
        rundir.claim_sweep_dir(tmp_path, {"resume_sweep": False})
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()
