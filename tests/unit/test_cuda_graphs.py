"""cuda_graphs=true on a machine without a GPU: which batches would replay the graph, and the
configurations it refuses. The replay itself is tested on a GPU (tests/gpu/test_gpu.py)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cnnlab.cli.train import run
from cnnlab.errors import ConfigError
from cnnlab.training import fast_forward as cuda_graphs
from cnnlab.training.fast_forward import (
    GraphedTrainingForward,
    capture_training_forward,
    check_cuda_graphs,
)
from cnnlab.training.lit import LitClassifier


class FakeCapture:
    """Stands in for the CUDA capture: records the batch it was given and counts replays."""

    def __init__(self) -> None:
        self.captured_shapes: list[tuple[int, ...]] = []
        self.replayed = 0

    def __call__(self, model: nn.Module, x: torch.Tensor) -> Callable[[torch.Tensor], object]:
        self.captured_shapes.append(tuple(x.shape))

        def replay(batch: torch.Tensor) -> torch.Tensor:
            self.replayed += 1
            return model(batch)

        return replay


def test_full_training_batches_replay_the_graph_and_the_rest_runs_eagerly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeCapture()
    monkeypatch.setattr(cuda_graphs, "capture_training_forward", fake)
    model = nn.Linear(4, 2)
    forward = GraphedTrainingForward(model)
    full, short = torch.randn(8, 4), torch.randn(3, 4)

    forward(full)  # first training batch: recorded once, then replayed
    forward(full)
    forward(short)  # the epoch's short last batch: another shape, eager
    model.eval()
    forward(full)  # validation: eval mode, eager
    model.train()
    out = forward(full)

    assert fake.captured_shapes == [(8, 4)]
    assert fake.replayed == forward.fast_batches == 3
    torch.testing.assert_close(out, model(full))


def test_capture_refuses_a_batch_on_the_cpu() -> None:
    with pytest.raises(RuntimeError, match="needs the batch on a CUDA GPU"):
        capture_training_forward(nn.Linear(4, 2), torch.randn(8, 4))


def test_graphs_leave_the_checkpointed_weights_as_they_are() -> None:
    def optimizer(params: object) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=0.1)

    plain = LitClassifier(nn.Linear(4, 2), optimizer=optimizer)
    graphed = LitClassifier(nn.Linear(4, 2), optimizer=optimizer, cuda_graphs=True)
    assert list(graphed.state_dict()) == list(plain.state_dict()) == ["model.weight", "model.bias"]


def test_cuda_graphs_on_a_cpu_run_is_a_config_error(make_cfg) -> None:
    with pytest.raises(ConfigError, match="needs a CUDA GPU and this run trains on cpu"):
        run(make_cfg("cuda_graphs=true"))


def _gpu_trainer(world_size: int = 1, accumulate: int = 1) -> SimpleNamespace:
    strategy = SimpleNamespace(root_device=torch.device("cuda", 0))
    return SimpleNamespace(
        strategy=strategy, world_size=world_size, accumulate_grad_batches=accumulate
    )


@pytest.mark.parametrize(
    ("overrides", "trainer", "reason"),
    [
        ([], _gpu_trainer(world_size=2), "it is for one GPU"),
        (["compile=true"], _gpu_trainer(), "compile=true is on too"),
        ([], _gpu_trainer(accumulate=4), "overwrites the gradients that accumulate_grad_batches"),
    ],
)
def test_cuda_graphs_refuses_what_the_replay_would_get_wrong(
    make_cfg, overrides: list[str], trainer: SimpleNamespace, reason: str
) -> None:
    cfg = make_cfg("cuda_graphs=true", *overrides)
    with pytest.raises(ConfigError, match=reason):
        check_cuda_graphs(cfg, trainer)
    check_cuda_graphs(make_cfg(*overrides), trainer)  # off: nothing to refuse
