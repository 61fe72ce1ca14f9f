"""CheckpointWriter: checkpoint files written in the background, in order, from a snapshot; and
the runs that use it write the same checkpoints as with background_checkpoints=false."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from cnnlab.checkpoint_writer import MAX_PENDING, CheckpointWriter
from cnnlab.checkpoints import link_checkpoint
from cnnlab.train import run
from conftest import TINY, compose_config


class GatedIO:
    """TorchCheckpointIO's job, but every write waits for ``gate`` and is logged."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.log: list[str] = []

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any = None) -> None:
        assert self.gate.wait(timeout=60), "the test never opened the gate"
        torch.save(checkpoint, path)
        self.log.append(f"write {Path(path).name}")

    def remove_checkpoint(self, path: Any) -> None:
        os.remove(path)
        self.log.append(f"remove {Path(path).name}")

    def load_checkpoint(self, path: Any, **kwargs: Any) -> dict:
        return torch.load(path, weights_only=True)


@pytest.fixture
def writer() -> CheckpointWriter:
    writer = CheckpointWriter()
    writer.io = GatedIO()  # type: ignore[assignment]
    yield writer
    writer.io.gate.set()
    writer.teardown()


def test_a_background_write_returns_before_the_file_is_written(
    writer: CheckpointWriter, tmp_path: Path
) -> None:
    path = tmp_path / "a.ckpt"
    with writer.background():
        writer.save_checkpoint({"w": torch.ones(3)}, path)
    assert not path.exists()  # still waiting for the gate: training went on
    writer.io.gate.set()
    writer.wait()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))


def test_the_file_holds_the_tensors_as_they_were_when_saved(
    writer: CheckpointWriter, tmp_path: Path
) -> None:
    weights = torch.zeros(4)
    with writer.background():
        writer.save_checkpoint({"state_dict": {"w": weights}}, tmp_path / "a.ckpt")
    weights.add_(1.0)  # the next optimizer step changes the weights in place
    writer.io.gate.set()
    writer.teardown()
    saved = torch.load(tmp_path / "a.ckpt", weights_only=True)["state_dict"]["w"]
    assert torch.equal(saved, torch.zeros(4))


def test_file_operations_run_in_the_order_asked_for(
    writer: CheckpointWriter, tmp_path: Path
) -> None:
    """The best file of epoch 1 replaces epoch 0's, and last.ckpt becomes a link to it: the
    removal and the link wait for the writes queued before them."""
    old, new, last = (tmp_path / n for n in ("best-0.ckpt", "best-1.ckpt", "last.ckpt"))
    writer.io.gate.set()
    writer.save_checkpoint({"epoch": 0}, old)  # outside background(): written at once
    assert writer.io.log == ["write best-0.ckpt"] and old.exists()
    writer.io.gate.clear()
    with writer.background():
        writer.save_checkpoint({"epoch": 1}, new)
        writer.remove_checkpoint(old)
        writer.after_writes(link_checkpoint, new, last)
    assert old.exists() and not last.exists()  # nothing has run yet
    writer.io.gate.set()
    writer.wait()
    assert writer.io.log == ["write best-0.ckpt", "write best-1.ckpt", "remove best-0.ckpt"]
    assert not old.exists() and os.path.samefile(new, last)


def test_writing_a_linked_last_checkpoint_leaves_the_best_file_whole(tmp_path: Path) -> None:
    writer = CheckpointWriter()
    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    writer.save_checkpoint({"epoch": 0, "w": torch.zeros(2)}, best)
    link_checkpoint(best, last)
    with writer.background():
        writer.save_checkpoint({"epoch": 1, "w": torch.ones(2)}, last)
    writer.teardown()
    assert torch.load(best, weights_only=True)["epoch"] == 0
    assert torch.load(last, weights_only=True)["epoch"] == 1
    assert os.stat(best).st_nlink == os.stat(last).st_nlink == 1


def test_a_save_outside_background_waits_for_the_queue_and_writes_at_once(
    writer: CheckpointWriter, tmp_path: Path
) -> None:
    """trainer.save_checkpoint and the SIGTERM checkpoint: the file is there on return."""
    with writer.background():
        writer.save_checkpoint({"epoch": 0}, tmp_path / "queued.ckpt")
    done = threading.Event()

    def save_now() -> None:
        writer.save_checkpoint({"epoch": 1}, tmp_path / "now.ckpt")
        done.set()

    thread = threading.Thread(target=save_now)
    thread.start()
    assert not done.wait(timeout=0.2)  # blocked behind the queued write
    writer.io.gate.set()
    thread.join(timeout=60)
    assert done.is_set()
    assert writer.io.log == ["write queued.ckpt", "write now.ckpt"]


def test_at_most_max_pending_snapshots_are_held(writer: CheckpointWriter, tmp_path: Path) -> None:
    """A disk slower than the epochs makes training wait instead of piling up weight copies."""
    returned: list[int] = []

    def save_many() -> None:
        with writer.background():
            for i in range(MAX_PENDING + 1):
                writer.save_checkpoint({"i": i}, tmp_path / f"{i}.ckpt")
                returned.append(i)

    thread = threading.Thread(target=save_many)
    thread.start()
    deadline = time.monotonic() + 60
    while len(returned) < MAX_PENDING and time.monotonic() < deadline:
        time.sleep(0.01)
    thread.join(timeout=0.2)
    assert returned == list(range(MAX_PENDING)) and thread.is_alive()  # waits for a free slot
    writer.io.gate.set()
    thread.join(timeout=60)
    assert returned == list(range(MAX_PENDING + 1))


def test_a_failed_background_write_is_raised_on_the_training_thread(tmp_path: Path) -> None:
    writer = CheckpointWriter()
    missing = tmp_path / "no" / "such" / "dir"
    missing.parent.parent.write_text("a file where a directory should be")
    # At the next operation if the write has failed by then, else at the end of fit.
    with pytest.raises(OSError):
        with writer.background():
            writer.save_checkpoint({"epoch": 0}, missing / "a.ckpt")
            writer.after_writes(print, "the next operation")
        writer.teardown()
    writer.teardown()  # raised once
    assert writer._executor is None


def test_disabled_writer_writes_at_once(tmp_path: Path) -> None:
    writer = CheckpointWriter(enabled=False)
    with writer.background():
        writer.save_checkpoint({"epoch": 0}, tmp_path / "a.ckpt")
    assert (tmp_path / "a.ckpt").exists() and writer._executor is None
    assert writer.seconds > 0


def _checkpoints(results: dict) -> dict[str, dict]:
    folder = Path(results["config"]["paths"]["output_dir"]) / "checkpoints"
    return {p.name: torch.load(p, weights_only=True) for p in sorted(folder.glob("*.ckpt"))}


def test_runs_write_the_same_checkpoints_in_the_background_as_at_once(tmp_path: Path) -> None:
    """Two epochs, deterministic: same files, same weights, same optimizer state; the time the
    training thread spent on them is in results.json."""
    common = [*TINY, "trainer.max_epochs=2", "deterministic=true"]
    background = run(compose_config(common, tmp_path / "background"))
    at_once = run(compose_config([*common, "background_checkpoints=false"], tmp_path / "at_once"))
    assert isinstance(background["checkpoint_s"], float)
    assert isinstance(at_once["checkpoint_s"], float)
    assert background["train_s"] > 0 and background["val_s"] > 0
    ours, theirs = _checkpoints(background), _checkpoints(at_once)
    assert ours.keys() == theirs.keys() and "last.ckpt" in ours
    for name, checkpoint in ours.items():
        assert checkpoint["epoch"] == theirs[name]["epoch"], name
        for key, tensor in checkpoint["state_dict"].items():
            assert torch.equal(tensor, theirs[name]["state_dict"][key]), (name, key)
        assert str(checkpoint["optimizer_states"]) == str(theirs[name]["optimizer_states"])


def test_checkpoints_go_to_the_background_unless_a_logger_reads_the_files(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from cnnlab.checkpoints import _loggers_read_checkpoint_files
    from test_resume import UploadingLogger

    def trainer(*loggers: object) -> SimpleNamespace:
        return SimpleNamespace(loggers=list(loggers))

    tensorboard, csv = TensorBoardLogger(tmp_path), CSVLogger(tmp_path)
    assert not _loggers_read_checkpoint_files(trainer())
    assert not _loggers_read_checkpoint_files(trainer(tensorboard, csv))
    assert _loggers_read_checkpoint_files(trainer(tensorboard, UploadingLogger(tmp_path)))


def test_on_a_gpu_the_writer_waits_for_the_snapshot_copies(
    writer: CheckpointWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copies are queued on the training thread's CUDA stream; the writer thread reads them
    on its own, so it first waits for an event recorded after them."""
    events: list[str] = []

    class FakeEvent:
        def record(self) -> None:
            events.append("recorded")

        def synchronize(self) -> None:
            events.append(f"waited, file written: {(tmp_path / 'a.ckpt').exists()}")

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    with writer.background():
        writer.save_checkpoint({"w": torch.ones(2)}, tmp_path / "a.ckpt")
    writer.io.gate.set()
    writer.wait()
    assert events == ["recorded", "waited, file written: False"]
