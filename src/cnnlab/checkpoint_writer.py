"""CheckpointWriter: checkpoint files written by a background thread, so that training goes on.

A checkpoint is serialised and written in full before Lightning's next step can start: AlexNet's
and VGG-11's are ~180 MB, 0.14-0.46 s per write on the 2-core development machine, once or twice
per epoch. The checkpoint callbacks of a run (cnnlab.checkpoints) ask for their writes inside
``CheckpointWriter.background()``: the checkpoint's tensors are copied on the training thread
(a point-in-time snapshot; the next step changes the weights in place), and the copy is written
by one worker thread. The copy stays on the tensors' device: on a GPU it is queued like any
kernel, where a copy to the host would make the training thread wait for the GPU. It costs the
checkpoint's size in device memory until written (~190 MB for AlexNet), for at most
MAX_PENDING writes at a time.

Every file operation goes through that one worker, in the order it was asked for: a write, the
removal of the best checkpoint it replaces, the hard link of last.ckpt to it. Lightning's own
``AsyncCheckpointIO`` writes in a thread too, but removes files at once (possibly before a write
still queued for them) and has no way to queue a link; and the Lightning releases of 2025
before pytorch-lightning PR #21079 (cnnlab accepts Lightning 2.2 and later) wrote the live
tensors, not a snapshot. Outside ``background()`` (``trainer.save_checkpoint``, the
SIGTERM checkpoint) the writer waits for the queued operations and writes at once: the file is
there when the call returns. An error of a background write is raised on the training thread at
the next checkpoint operation or at the end of ``fit`` (``teardown``).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import torch
from lightning.fabric.plugins import CheckpointIO, TorchCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection

# Snapshots held at once: a disk slower than the epochs makes training wait instead of holding
# one more copy of the weights per epoch.
MAX_PENDING = 2


def break_hard_link(path: str | os.PathLike) -> None:
    """Remove ``path`` if it is a hard link to another checkpoint, so that writing it cannot
    change that other file. (Lightning writes to a temporary file and moves it into place; a
    move across filesystems copies into the existing file.)"""
    try:
        if os.stat(path).st_nlink > 1:
            os.unlink(path)
    except FileNotFoundError:
        pass


def _snapshot(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().clone()


def _gpu_work_done_event() -> torch.cuda.Event | None:
    """An event on the current CUDA stream, after the work queued so far (the snapshot's copies):
    the writer thread reads the copies through its own stream, so it waits for this first."""
    if not torch.cuda.is_initialized():
        return None
    event = torch.cuda.Event()
    event.record()
    return event


class CheckpointWriter(CheckpointIO):
    """Lightning's checkpoint IO for cnnlab runs: ``TorchCheckpointIO``'s files, written in the
    background inside ``background()`` (module docstring). ``seconds`` is the time the training
    thread spent on checkpoint files (results.json ``checkpoint_s``)."""

    def __init__(self, enabled: bool = True) -> None:
        super().__init__()
        self.io = TorchCheckpointIO()
        self.enabled = enabled
        self.seconds = 0.0
        self._executor: ThreadPoolExecutor | None = None
        self._pending: deque[Future] = deque()  # every queued operation, oldest first
        self._writes: deque[Future] = deque()  # the queued writes: each holds a snapshot
        self._in_background = False

    @contextmanager
    def background(self) -> Iterator[None]:
        """Checkpoint operations asked for inside return before their file work is done."""
        previous, self._in_background = self._in_background, self.enabled
        try:
            yield
        finally:
            self._in_background = previous

    # --- Lightning's CheckpointIO interface
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        with self._timed():
            copied = None
            if self._in_background:
                checkpoint = apply_to_collection(checkpoint, torch.Tensor, _snapshot)
                copied = _gpu_work_done_event()
            self._run(self._write, checkpoint, path, storage_options, copied)

    def remove_checkpoint(self, path: Any) -> None:
        with self._timed():
            self._run(self.io.remove_checkpoint, path)

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.wait()  # the file may still be on its way
        return self.io.load_checkpoint(path, *args, **kwargs)

    def teardown(self) -> None:  # the end of fit/test: every file is written
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    # --- ordering
    def after_writes(self, operation: Callable[..., Any], *args: Any) -> None:
        """Run ``operation(*args)`` once every file operation asked for so far is done (in the
        background inside ``background()``, else now)."""
        with self._timed():
            self._run(operation, *args)

    def wait(self) -> None:
        """Block until every queued file operation is done; raise the first error among them."""
        with self._timed():
            self._drain()

    def _drain(self) -> None:
        self._writes.clear()
        while self._pending:
            self._pending.popleft().result()

    @contextmanager
    def _timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start

    def _write(
        self,
        checkpoint: dict[str, Any],
        path: Any,
        storage_options: Any,
        copied: torch.cuda.Event | None = None,
    ) -> None:
        if copied is not None:  # the snapshot's GPU copies, queued on the training thread's stream
            copied.synchronize()
        break_hard_link(path)
        self.io.save_checkpoint(checkpoint, path, storage_options)

    def _run(self, operation: Callable[..., Any], *args: Any) -> None:
        if not self._in_background:
            self._drain()
            operation(*args)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoints")
        future = self._executor.submit(operation, *args)
        self._pending.append(future)
        if operation == self._write:
            self._writes.append(future)
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()  # a finished operation's error surfaces here
        while self._writes and (self._writes[0].done() or len(self._writes) > MAX_PENDING):
            self._writes.popleft().result()
