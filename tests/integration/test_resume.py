"""Exact resume: a run killed (SIGKILL) or stopped (SIGTERM) and continued with ``resume=`` ends
where the uninterrupted run ends; checkpoints hold what a resume needs and load weights-only."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from cli_runner import run_cli
from cnnlab.cli.train import run
from cnnlab.data.loader import IndexBatchLoader
from cnnlab.runs.checkpoints import META_KEY
from cnnlab.training.lit import CHECKPOINT_KEY
from conftest import compose_config

# 3 epochs of 32 batches: long enough to stop a subprocess in the middle, a few seconds in all.
RUN = [
    "dataset.train_subset=2000",
    "dataset.val_size=200",
    "dataset.test_subset=500",
    "dataset.batch_size=64",
    "trainer.max_epochs=3",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "deterministic=true",
]
EXE = Path(sys.executable).with_name("cnnlab-train")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference: the same run, never stopped."""
    return run(compose_config(RUN, tmp_path_factory.mktemp("reference")))


def start_and_signal(run_dir: Path, signum: signal.Signals) -> subprocess.Popen:
    """Start the run in a subprocess; send ``signum`` once its epoch-0 checkpoint exists, i.e.
    while it trains epoch 1."""
    process = subprocess.Popen(
        [str(EXE), *RUN, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signum)
    process.wait(timeout=300)
    return process


def assert_same_end(results: dict, reference: dict) -> None:
    assert results["status"] == "ok" and results["epochs_completed"] == 3
    assert results["test_acc"] == pytest.approx(reference["test_acc"], abs=1e-6)
    assert results["test_loss"] == pytest.approx(reference["test_loss"], abs=1e-6)
    # The history of all epochs survives the interruption, and so do the epochs' values.
    assert results["history"]["val/acc"] == pytest.approx(reference["history"]["val/acc"], abs=1e-6)


def test_sigkill_during_an_epoch_then_resume_ends_like_uninterrupted(
    tmp_path: Path, uninterrupted: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    process = start_and_signal(run_dir, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL, process.stdout.read()[-2000:]
    assert not (run_dir / "results.json").exists()
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] < 2  # killed before the last epoch ended
    hydra_snapshot = (run_dir / ".hydra" / "config.yaml").read_text()

    code, output = run_cli([f"resume={run_dir}"], capsys)  # nothing else: its own config
    assert code == 0, output

    results = json.loads((run_dir / "results.json").read_text())
    assert_same_end(results, uninterrupted)
    assert results["resumed_from"]["epoch"] == saved["epoch"]
    assert results["overrides"] == RUN  # the run's own command, not "resume=..."
    assert (run_dir / ".hydra" / "config.yaml").read_text() == hydra_snapshot


def test_sigterm_saves_a_checkpoint_and_exits_cleanly_then_resumes(
    tmp_path: Path, uninterrupted: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    process = start_and_signal(run_dir, signal.SIGTERM)
    output = process.stdout.read()
    assert process.returncode == 0, output[-2000:]
    assert "Traceback" not in output
    assert f"cnnlab-train resume={run_dir}" in output.replace("\n", "")
    interrupted = json.loads((run_dir / "results.json").read_text())
    assert interrupted["status"] == "interrupted" and "SIGTERM" in interrupted["error"]
    assert interrupted["checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt")

    code, output = run_cli([f"resume={run_dir}"], capsys)
    assert code == 0, output
    resumed = json.loads((run_dir / "results.json").read_text())
    assert_same_end(resumed, uninterrupted)
    # The epoch restarted mid-way is timed from its first batch here, not from the clock's zero:
    # the training time of both processes stays below what both took from start to end.
    assert 0 < resumed["train_s"] < interrupted["wall_s"] + resumed["wall_s"]
    assert resumed["train_images_per_s"] > 100


def test_checkpoints_last_and_best_load_weights_only(uninterrupted: dict) -> None:
    folder = Path(uninterrupted["config"]["paths"]["output_dir"]) / "checkpoints"
    names = sorted(p.name for p in folder.glob("*.ckpt"))
    assert "last.ckpt" in names and len([n for n in names if n.startswith("best-epoch=")]) == 1
    saved = torch.load(folder / "last.ckpt", weights_only=True)  # raises if anything is pickled
    meta = saved[META_KEY]
    assert meta["model_target"] == "cnnlab.models.lenet.LeNet"
    assert meta["config"]["trainer"]["max_epochs"] == 3
    assert len(saved[CHECKPOINT_KEY]["history"]["val/acc"]) == 3


def test_loader_resumes_after_the_batches_training_consumed() -> None:
    images = torch.zeros(100, 28, 28, dtype=torch.uint8)
    ids = torch.arange(100)
    loader = IndexBatchLoader(images, ids, 8, shuffle=True, seed=3, epoch_fn=lambda: 5)
    batches = iter(loader)
    consumed = [next(batches)[1] for _ in range(4)]
    state = loader.state_dict()
    assert state == {"epoch": 5, "batches": 4}

    resumed = IndexBatchLoader(images, ids, 8, shuffle=True, seed=3, epoch_fn=lambda: 5)
    resumed.load_state_dict(state)
    rest = [b[1] for b in resumed]
    everything = torch.cat(consumed + rest)
    assert torch.equal(everything, torch.cat([b[1] for b in loader]))  # same order, no repeats
    assert len(rest) == len(loader) - 4
    # The next epoch starts from its beginning again.
    assert len(list(resumed)) == len(loader)


def test_each_training_batch_draws_from_its_own_seed(make_cfg, tmp_path: Path) -> None:
    """Dropout of batch k depends on (seed, epoch, k, rank) only: after the hook, the CPU
    generator is where seeding with batch_seed puts it, whatever was drawn before."""
    from types import SimpleNamespace

    from cnnlab.runs.checkpoints import RunCheckpointing
    from cnnlab.seeds import batch_seed

    hook = RunCheckpointing(make_cfg("seed=7"), tmp_path, {})
    trainer = SimpleNamespace(current_epoch=2, global_rank=0)
    module = SimpleNamespace(device=torch.device("cpu"))
    torch.rand(5)  # whatever came before
    hook.on_train_batch_start(trainer, module, None, 3)
    drawn = torch.rand(4)
    torch.manual_seed(batch_seed(7, 2, 3, 0))
    assert torch.equal(drawn, torch.rand(4))
    hook.on_train_batch_start(trainer, module, None, 4)
    assert not torch.equal(torch.rand(4), drawn)


def test_requeue_safe_command_skips_a_finished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`resume_sweep=true` with a fixed run dir: what a requeued SLURM job runs again."""
    run_dir = tmp_path / "run"
    command = [*RUN, "++trainer.limit_train_batches=2", f"hydra.run.dir={run_dir}"]
    code, output = run_cli([*command, "resume_sweep=true"], capsys)
    assert code == 0, output
    finished = (run_dir / "results.json").read_bytes()
    code, output = run_cli([*command, "resume_sweep=true"], capsys)
    assert code == 0 and "already finished (ok): skipped" in output
    assert (run_dir / "results.json").read_bytes() == finished


class UploadingLogger(TensorBoardLogger):
    """A logger that reads the checkpoint files when told of them, as W&B's and MLflow's do."""

    told: list[tuple[str, bool]] = []

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        path = Path(checkpoint_callback.best_model_path)
        self.told.append((checkpoint_callback.filename, path.is_file()))


def test_first_epoch_writes_the_best_file_and_last_checkpoint(make_cfg) -> None:
    """The first epoch always improves val/acc: both files hold its state, and the loggers hear
    of both writes after each file is on disk (loggers that upload checkpoints read them)."""
    UploadingLogger.told.clear()
    logger = "logger.tensorboard._target_=test_resume.UploadingLogger"
    results = run(make_cfg("trainer.max_epochs=1", logger))
    assert UploadingLogger.told == [("best-{epoch}", True), ("last", True)]
    folder = Path(results["config"]["paths"]["output_dir"]) / "checkpoints"
    (best,) = folder.glob("best-epoch=*.ckpt")
    assert best.name == "best-epoch=0.ckpt"
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 0


def test_an_epoch_without_improvement_writes_last_checkpoint_anew(make_cfg) -> None:
    # lr far below float32 resolution: the weights, and so val/acc, stay exactly the same.
    results = run(make_cfg("trainer.max_epochs=2", "optimizer.lr=1e-12"))
    assert results["history"]["val/acc"][0] == results["history"]["val/acc"][1]
    folder = Path(results["config"]["paths"]["output_dir"]) / "checkpoints"
    (best,) = folder.glob("best-epoch=*.ckpt")
    last = folder / "last.ckpt"
    assert best.name == "best-epoch=0.ckpt" and not os.path.samefile(best, last)
    assert os.stat(best).st_nlink == os.stat(last).st_nlink == 1
    assert torch.load(best, weights_only=True)["epoch"] == 0
    assert torch.load(last, weights_only=True)["epoch"] == 1


def test_a_moved_run_keeps_its_best_checkpoint_when_resumed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lightning forgets the best score of a checkpoint written in another directory; the run's
    own checkpoint callbacks move it along: after the resumed epoch there is one best file, the
    epoch with the best val/acc. (Forgotten, the old best file stays beside a new one, and a
    worse epoch becomes "best".)"""
    first = tmp_path / "first"
    code, output = run_cli([*RUN, "trainer.max_epochs=1", f"hydra.run.dir={first}"], capsys)
    assert code == 0, output
    moved = tmp_path / "copied" / "run"
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    code, output = run_cli([f"resume={moved}", "trainer.max_epochs=2"], capsys)
    assert code == 0, output
    val_acc = json.loads((moved / "results.json").read_text())["history"]["val/acc"]
    best_epoch = max(range(2), key=lambda epoch: (val_acc[epoch], -epoch))
    best = [p.name for p in (moved / "checkpoints").glob("best-*.ckpt")]
    assert best == [f"best-epoch={best_epoch}.ckpt"], (val_acc, best)
    assert "dirpath has changed" not in output


def test_resuming_a_finished_run_is_refused_and_keeps_its_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    code, output = run_cli([*RUN, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"], capsys)
    assert code == 0, output
    finished = (run_dir / "results.json").read_bytes()
    code, output = run_cli([f"resume={run_dir}"], capsys)
    assert code == 1 and "Traceback" not in output
    assert "the run already finished" in output and "epochs_completed=1" in output
    assert (run_dir / "results.json").read_bytes() == finished
    code, output = run_cli([f"resume={run_dir}", "trainer.max_epochs=2"], capsys)  # longer: ok
    assert code == 0, output
    assert json.loads((run_dir / "results.json").read_text())["epochs_completed"] == 2
