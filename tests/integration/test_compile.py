"""compile=true: the model is compiled once per run, for its full training batches; validation,
test and short last batches run eagerly (cnnlab.fast_training). Dynamo's counting backend
stands in for Inductor here, so these tests take seconds; tests/gpu/test_gpu.py trains with the
real compiler."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounter

from cnnlab.cli.train import run
from cnnlab.runs.checkpoints import META_KEY
from cnnlab.training.fast_forward import CompiledTrainingForward
from cnnlab.training.lit import LitClassifier
from conftest import record_instances


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> CompileCounter:
    """torch.compile with a backend that counts compiled frames and runs them eagerly."""
    counter = CompileCounter()
    real_compile = torch.compile
    calls: list[dict] = []

    def counting_compile(model: nn.Module, **kwargs: object) -> nn.Module:
        calls.append(kwargs)
        return real_compile(model, backend=counter, dynamic=kwargs.get("dynamic"))

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", counting_compile)
    counter.calls = calls  # type: ignore[attr-defined]
    yield counter
    torch._dynamo.reset()


def test_full_training_batches_run_compiled_and_the_rest_eagerly(counter) -> None:
    model = nn.Linear(4, 2)
    forward = CompiledTrainingForward(model)
    full, short = torch.randn(8, 4), torch.randn(3, 4)
    forward(full)
    forward(full)
    forward(short)  # the epoch's short last batch: eager
    model.eval()
    with torch.inference_mode():
        forward(full)  # validation and test: eval mode, inference mode, eager
    model.train()
    out = forward(full)
    assert counter.calls == [{"dynamic": False}]
    assert counter.frame_count == 1 and forward.fast_batches == 3
    torch.testing.assert_close(out, model(full))


def test_a_compile_run_compiles_once_for_two_epochs_with_validation_and_test(
    make_cfg, counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compiling the whole model recompiled for the sanity check, the short batches' sizes, the
    training mode and the test's inference mode: four compilations in a short GoogLeNet run."""
    forwards = record_instances(monkeypatch, CompiledTrainingForward)
    results = run(make_cfg("compile=true", "trainer.max_epochs=2", "dataset.batch_size=384"))
    assert results["status"] == "ok" and results["test_acc"] is not None
    # 2,000 training images: 5 full batches of 384 per epoch, the last 80 run eagerly.
    assert [f.fast_batches for f in forwards] == [10]
    assert counter.frame_count == 1


def test_compile_leaves_the_checkpointed_weights_as_they_are() -> None:
    def optimizer(params: object) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=0.1)

    compiled = LitClassifier(nn.Linear(4, 2), optimizer=optimizer, compile=True)
    assert list(compiled.state_dict()) == ["model.weight", "model.bias"]


def test_a_checkpoint_of_a_wrapped_compiled_model_continues(make_cfg, tmp_path: Path) -> None:
    """Before compilation moved into cnnlab.fast_training, compile=true checkpoints held the
    wrapper's names (model._orig_mod.<name>): such a checkpoint still resumes."""
    first = run(make_cfg())
    last = Path(first["config"]["paths"]["output_dir"]) / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["state_dict"] = {
        key.replace("model.", "model._orig_mod.", 1): value
        for key, value in checkpoint["state_dict"].items()
    }
    # One more epoch: a continued run takes its config from the checkpoint.
    checkpoint[META_KEY]["config"]["trainer"]["max_epochs"] = 2
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    second = run(make_cfg(f"ckpt_path={old}"))
    assert second["status"] == "ok" and second["epochs_completed"] == 2
