"""glibc malloc keeps freed activations for the next step (cnnlab.allocator)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cnnlab.training import allocator

# Thirty steps of the seed LeNet recipe on cnnlab's data path (batch 256) in a fresh process,
# after ten warm-up steps; prints the page faults the thirty took.
STEPS = """
import resource, sys, torch
from cnnlab.training.allocator import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else False
from cnnlab.data.datamodule import IDXDataModule
from cnnlab.models.lenet import LeNet
data = IDXDataModule("fashion_mnist", root=None, val_size=0)
data.setup()
model = LeNet().to(memory_format=torch.channels_last)
optimizer = torch.optim.SGD(model.parameters(), lr=0.9)
batches = iter(data.train_dataloader())
def step():
    x, y = data.on_after_batch_transfer(next(batches), 0)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
for _ in range(10):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    step()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True, env=env
    )
    tuned, faults = done.stdout.split()
    return tuned, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_training_steps_stop_page_faulting_their_activations_in() -> None:
    tuned, faults_tuned = _faults("tuned")
    _, faults_default = _faults("default")
    assert tuned == "True"
    # Default glibc gives the steps' activations back to the kernel and faults them in again
    # (here ~100,000 faults in 30 steps, against a few hundred).
    assert faults_default > 20 * max(faults_tuned, 1000), (faults_default, faults_tuned)


def test_a_users_allocator_choice_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.setenv("LD_PRELOAD", "libjemalloc.so.2")
    assert allocator.user_chose_allocator() and allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.delenv("LD_PRELOAD")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("CNNLAB_MALLOC_TUNING", "0")
    assert allocator.keep_freed_memory() is False
