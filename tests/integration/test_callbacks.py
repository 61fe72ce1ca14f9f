"""Training-time diagnostics: the gradient-norm callback (TensorBoard scalars and histograms,
results.json) and the config switch that turns it on."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from cnnlab.cli.train import run
from cnnlab.data import load_split
from cnnlab.models.layers import init_weights, make_activation
from cnnlab.training.callbacks import GradientNorms, PeakMemory, diagnostic_callbacks

LENET_LAYERS = ["features.0", "features.3", "classifier.1", "classifier.3", "classifier.5"]


def test_diagnostics_config_switches_callbacks_on() -> None:
    assert [type(c) for c in diagnostic_callbacks(None)] == [PeakMemory]
    assert [type(c) for c in diagnostic_callbacks(OmegaConf.create({"grad_norms": False}))] == [
        PeakMemory
    ]
    callbacks = diagnostic_callbacks(
        OmegaConf.create({"peak_memory": False, "grad_norms": True, "grad_norms_every_n_steps": 7})
    )
    assert len(callbacks) == 1 and isinstance(callbacks[0], GradientNorms)
    assert callbacks[0].every_n_steps == 7 and callbacks[0].histograms


def test_grad_norm_callback_logs_one_value_per_layer(make_cfg) -> None:
    cfg = make_cfg(
        "++diagnostics.grad_norms=true",
        "++diagnostics.grad_norms_every_n_steps=2",
        "dataset.batch_size=200",  # 2,000 images: 10 steps, logged at 0, 2, 4, 6, 8
    )
    results = run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"histograms": 0})
    events.Reload()
    scalars = [t for t in events.Tags()["scalars"] if t.startswith("grad_norm/")]
    assert sorted(scalars) == sorted(f"grad_norm/{name}" for name in LENET_LAYERS)
    for tag in scalars:
        values = events.Scalars(tag)
        assert [v.step for v in values] == [0, 2, 4, 6, 8]
        assert all(v.value > 0 for v in values)
    histograms = [t for t in events.Tags()["histograms"] if t.startswith("grad/")]
    assert sorted(histograms) == sorted(f"grad/{name}" for name in LENET_LAYERS)

    written = json.loads((run_dir / "results.json").read_text())["grad_norms"]
    assert written == results["grad_norms"]
    assert list(written["mean_per_layer"]) == LENET_LAYERS  # input to output
    assert written["logged_steps"] == 5 and written["every_n_steps"] == 2


def _deep_plain_net_norms(activation: str) -> list[float]:
    """Gradient norms per layer of an 8-hidden-layer MLP after one backward pass on a real
    Fashion-MNIST batch, read through the callback."""
    images, labels = load_split("fashion_mnist", None, "train")
    x = images[:256].float().flatten(1)
    x = (x - x.mean()) / x.std()
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    width = x.shape[1]
    for _ in range(8):
        layers += [nn.Linear(width, 64), make_activation(activation)]
        width = 64
    net = nn.Sequential(*layers, nn.Linear(width, 10))
    init_weights(net, "xavier")
    F.cross_entropy(net(x), labels[:256].long()).backward()
    callback = GradientNorms(every_n_steps=1, histograms=False)
    trainer = SimpleNamespace(global_step=0, loggers=[], is_global_zero=True)
    callback.on_before_optimizer_step(trainer, SimpleNamespace(model=net), None)
    return list(callback.results_extras()["grad_norms"]["mean_per_layer"].values())


def test_sigmoid_gradients_vanish_towards_the_input_relu_gradients_do_not() -> None:
    sigmoid, relu = _deep_plain_net_norms("sigmoid"), _deep_plain_net_norms("relu")
    assert len(sigmoid) == len(relu) == 9
    # sigmoid' <= 1/4: every layer shrinks the gradient on its way back to the input
    assert sigmoid[0] < 1e-3 * sigmoid[-1]
    assert relu[0] > 0.1 * relu[-1]
