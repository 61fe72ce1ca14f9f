"""The GPU recipe (``trainer=gpu``) on a real CUDA device: data resident and resized on the
device, bf16 autocast, channels_last, cuDNN autotuning, opt-in torch.compile and CUDA graphs.
Skipped where no CUDA GPU is visible (CI); on a GPU machine: ``pytest tests/gpu/test_gpu.py``."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.cli import bench
from cnnlab.cli.train import run
from cnnlab.training.fast_forward import GraphedTrainingForward
from cnnlab.training.lit import LitClassifier
from conftest import record_instances

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_gpu_recipe_keeps_the_data_on_the_device_and_trains_in_bf16(
    make_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}
    original_step = LitClassifier.training_step

    def spy(self: LitClassifier, batch: tuple, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        images, _ = self.trainer.datamodule.splits["train"]
        if seen:  # the first step's batch is full; the epoch's last one is not
            return original_step(self, batch, batch_idx)
        seen.update(
            x_device=x.device.type,
            x_shape=tuple(x.shape),
            channels_last=x.is_contiguous(memory_format=torch.channels_last),
            split_device=images.device.type,
            split_dtype=images.dtype,
            weight_dtype=next(self.model.parameters()).dtype,
            autocast=torch.is_autocast_enabled("cuda"),
            autocast_dtype=torch.get_autocast_dtype("cuda"),
            cudnn_benchmark=torch.backends.cudnn.benchmark,
        )
        return original_step(self, batch, batch_idx)

    monkeypatch.setattr(LitClassifier, "training_step", spy)
    resnet = ("experiment=resnet18", "dataset.image_size=64", "dataset.batch_size=64")
    results = run(make_cfg("trainer=gpu", *resnet))
    assert results["status"] == "ok" and "NVIDIA" in results["device"]
    assert math.isfinite(results["train_loss"]) and results["test_acc"] is not None
    assert results["peak_memory_kind"] == "cuda_max_allocated"
    assert seen == {
        "x_device": "cuda",
        "x_shape": (64, 1, 64, 64),  # resized from 28 px on the device, per batch
        "channels_last": True,
        "split_device": "cuda",  # the whole split lives on the GPU ...
        "split_dtype": torch.uint8,  # ... as uint8 (55 MB for Fashion-MNIST)
        "weight_dtype": torch.float32,  # bf16-mixed: float32 weights, bf16 autocast
        "autocast": True,
        "autocast_dtype": torch.bfloat16,
        "cudnn_benchmark": True,
    }


def test_compile_trains_on_the_gpu(make_cfg) -> None:
    results = run(make_cfg("trainer=gpu", "compile=true", "++trainer.limit_train_batches=10"))
    assert results["status"] == "ok" and math.isfinite(results["train_loss"])


def test_gpu_throughput_waits_for_the_epochs_last_step(
    make_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU runs behind the Python loop: the epoch's clock stops only once its last step has
    run on the device, or images/s would count queued work."""
    synced_at: list[int] = []
    current: dict[str, int] = {}
    original_end, original_sync = LitClassifier.on_train_batch_end, torch.cuda.synchronize

    def batch_end(self: LitClassifier, outputs: object, batch: tuple, batch_idx: int) -> None:
        current["batch"] = batch_idx
        original_end(self, outputs, batch, batch_idx)
        current.pop("batch")

    def sync(device: object = None) -> None:
        if "batch" in current:
            synced_at.append(current["batch"])
        original_sync(device)

    monkeypatch.setattr(LitClassifier, "on_train_batch_end", batch_end)
    monkeypatch.setattr(torch.cuda, "synchronize", sync)
    results = run(make_cfg("trainer=gpu", "++trainer.limit_train_batches=5", "test=false"))
    assert results["status"] == "ok" and results["train_images_per_s"] > 0
    assert synced_at == [4]


def test_bench_on_the_gpu(tmp_path: Path) -> None:
    argv = ["--models", "alexnet", "--steps", "2", "--repeats", "1", "--no-startup"]
    argv += ["--warmup-repeats", "1"]
    assert bench.main([*argv, "--batch-size", "16", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert "NVIDIA" in report["device"]
    (case,) = report["cases"]
    assert (case["model"], case["image_size"]) == ("alexnet", 224)
    assert all(rate > 0 for rate in case["images_per_s"].values())


def test_graph_replays_train_like_the_eager_model() -> None:
    torch.manual_seed(0)
    eager = nn.Sequential(
        nn.Conv2d(1, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).cuda()
    graphed_model = copy.deepcopy(eager)
    graphed = GraphedTrainingForward(graphed_model)
    batches = [
        (torch.randn(16, 1, 28, 28, device="cuda"), torch.randint(0, 10, (16,), device="cuda"))
        for _ in range(5)
    ]
    for model, forward in ((eager, eager), (graphed_model, graphed)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in batches:
            F.cross_entropy(forward(x), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    assert graphed.fast_batches == 5
    # Parameters only: the capture's warm-up passes also moved BatchNorm's running statistics.
    for (name, want), got in zip(eager.named_parameters(), graphed_model.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)


def test_cuda_graphs_run_replays_full_batches_and_learns_like_eager(
    make_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    forwards = record_instances(monkeypatch, GraphedTrainingForward)
    resnet = ("experiment=resnet18", "dataset.image_size=64", "dataset.batch_size=64")
    eager = run(make_cfg("trainer=gpu", *resnet))
    graphed = run(make_cfg("trainer=gpu", "cuda_graphs=true", *resnet))
    assert graphed["status"] == "ok" and graphed["test_acc"] is not None
    # 2,000 training images: 31 full batches of 64 replay the graph, the last 16 run eagerly.
    assert [f.fast_batches for f in forwards] == [31]
    assert graphed["train_loss"] == pytest.approx(eager["train_loss"], rel=0.05)
