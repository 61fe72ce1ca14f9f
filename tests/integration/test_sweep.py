"""``cnnlab-train -m``: one bad job never loses a sweep, and a stopped sweep continues with
``resume_sweep=true``. The sweeps run in the test process through the real Hydra entry point."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
from pathlib import Path

import lightning as L
import pytest

from cli_runner import run_cli
from cnnlab.cli import train
from cnnlab.training import build, trainer
from conftest import compose_config

# Ten steps of 50 images per job: enough for lr=1e8 to diverge, a second or two per job.
TINY_JOB = [
    "ablation=[relu]",
    "dataset.train_subset=500",
    "dataset.batch_size=50",
    "dataset.val_size=200",
    "dataset.test_subset=200",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def sweep(args: list[str], sweep_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    return run_cli(["-m", *args, *TINY_JOB, f"hydra.sweep.dir={sweep_dir}"], capsys)


def results(sweep_dir: Path, job: int) -> dict:
    return json.loads((sweep_dir / str(job) / "results.json").read_text())


def test_sweep_of_three_with_a_diverging_middle_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = sweep(["optimizer.lr=0.1,1e8,0.2"], tmp_path, capsys)
    assert code == 0, output  # divergence is an outcome, not a failure
    assert [results(tmp_path, job)["status"] for job in range(3)] == ["ok", "diverged", "ok"]
    diverged = results(tmp_path, 1)
    assert diverged["diverged_epoch"] == 0 and diverged["diverged_step"] >= 0
    assert diverged["test_acc"] is None and "training loss became" in diverged["error"]
    assert results(tmp_path, 2)["test_acc"] > 0.1  # the sweep went on after the divergence
    assert "3 jobs, 1 diverged, 2 ok" in output
    assert "job 1 diverged: optimizer.lr=100000000.0 -- diverged at epoch 1" in output
    if importlib.util.find_spec("cnnlab.runs.report") is not None:  # cnnlab-report's table of it
        from cnnlab.runs.report import build_report

        report = build_report(tmp_path, tmp_path / "report")
        assert "Runs: 3 (1 diverged, 2 ok)" in report.markdown
        assert "diverged" in report.table


def test_a_crashing_job_is_recorded_and_the_sweep_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_check = build.check_image_size

    def crash_when_lr_is_0_3(cfg):  # an unexpected error, not a user error
        if cfg.optimizer.lr == 0.3:
            raise RuntimeError("simulated crash inside a job")
        return real_check(cfg)

    monkeypatch.setattr(build, "check_image_size", crash_when_lr_is_0_3)
    code, output = sweep(["optimizer.lr=0.3,0.1"], tmp_path, capsys)
    assert code == 1, output
    failed = results(tmp_path, 0)
    assert failed["status"] == "failed"
    assert failed["error"] == "RuntimeError: simulated crash inside a job"
    traceback_text = (tmp_path / "0" / "traceback.txt").read_text()
    assert "crash_when_lr_is_0_3" in traceback_text and "RuntimeError" in traceback_text
    assert results(tmp_path, 1)["status"] == "ok"
    assert "job 0 failed: optimizer.lr=0.3 -- RuntimeError: simulated crash inside a job" in output
    assert "1 job(s) did not finish: 0" in output


class SigtermAtBatch(L.Callback):
    """What SLURM does before preemption, from inside: SIGTERM to this process mid-epoch."""

    def __init__(self, batch_idx: int) -> None:
        self.batch_idx = batch_idx

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.batch_idx:
            os.kill(os.getpid(), signal.SIGTERM)


def test_resume_sweep_skips_finished_continues_interrupted_and_runs_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["optimizer.lr=0.1,0.2,0.3", "deterministic=true"]
    real_callbacks = trainer.diagnostic_callbacks
    jobs_started: list[int] = []

    def sigterm_in_second_job(diagnostics):
        jobs_started.append(1)
        extra = [SigtermAtBatch(4)] if len(jobs_started) == 2 else []
        return real_callbacks(diagnostics) + extra

    monkeypatch.setattr(trainer, "diagnostic_callbacks", sigterm_in_second_job)
    code, output = sweep(args, tmp_path, capsys)
    assert code == 0, output
    assert "resume_sweep=true" in output  # how to continue it
    assert results(tmp_path, 0)["status"] == "ok"
    assert results(tmp_path, 1)["status"] == "interrupted"
    assert (tmp_path / "1" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "2").exists()  # the stopped sweep started nothing more
    first_job = (tmp_path / "0" / "results.json").read_bytes()

    monkeypatch.setattr(trainer, "diagnostic_callbacks", real_callbacks)
    code, output = sweep([*args, "resume_sweep=true"], tmp_path, capsys)
    assert code == 0, output
    assert (tmp_path / "0" / "results.json").read_bytes() == first_job  # skipped, untouched
    assert "already finished (ok): skipped" in output
    resumed = results(tmp_path, 1)
    assert resumed["status"] == "ok" and resumed["resumed_from"]["global_step"] == 5
    assert "optimizer.lr=0.2" in resumed["overrides"]
    assert not any("resume_sweep" in o for o in resumed["overrides"])  # same label as before
    assert results(tmp_path, 2)["status"] == "ok"
    assert "3 jobs, 3 ok" in output

    # Continued mid-epoch, the job ends exactly where an uninterrupted run of it ends.
    reference = train.run(
        compose_config(["optimizer.lr=0.2", "deterministic=true", *TINY_JOB], tmp_path / "ref")
    )
    assert resumed["test_acc"] == pytest.approx(reference["test_acc"], abs=1e-6)
    assert resumed["test_loss"] == pytest.approx(reference["test_loss"], abs=1e-6)


def test_resume_sweep_needs_the_sweep_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "multirun" / "never-ran"
    code, output = sweep(["optimizer.lr=0.1,0.2", "resume_sweep=true"], missing, capsys)
    assert code == 1
    assert f"the sweep directory {missing} does not exist" in output
    assert not missing.exists()


def test_tensorboard_names_each_job_by_what_tells_it_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = sweep(["optimizer.lr=0.1,0.2", "model.pool=max,avg"], tmp_path, capsys)
    assert code == 0, output
    labels = {job: Path(results(tmp_path, job)["tensorboard_dir"]).name for job in range(4)}
    assert labels == {0: "lr=0.1,pool=max", 1: "lr=0.1,pool=avg", 2: "lr=0.2,pool=max",
                      3: "lr=0.2,pool=avg"}  # fmt: skip
    assert all((tmp_path / str(job) / "tensorboard" / labels[job]).is_dir() for job in range(4))


def test_resume_sweep_with_other_arguments_is_refused_before_any_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = sweep(["optimizer.lr=0.1,0.2"], tmp_path, capsys)
    assert code == 0, output
    record = (tmp_path / "multirun.yaml").read_bytes()
    finished = (tmp_path / "0" / "results.json").read_bytes()
    code, output = sweep(["optimizer.lr=0.1,0.3", "resume_sweep=true"], tmp_path, capsys)
    assert code == 1 and "Traceback" not in output
    assert "holds a sweep made with optimizer.lr=0.1,0.2" in output
    assert "3 jobs" not in output and "ok" not in output.split("error:")[0]
    assert (tmp_path / "multirun.yaml").read_bytes() == record  # not rewritten
    assert (tmp_path / "0" / "results.json").read_bytes() == finished
    assert not (tmp_path / "2").exists()
