"""LeNet-5: the lecture's layer table and a grid of knob combinations."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from cnnlab.models.layers import LocallyConnected2d
from cnnlab.models.lenet import LeNet


def test_lecture_lenet_table() -> None:
    model = LeNet()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (6, (5, 5), (2, 2)),
        (16, (5, 5), (0, 0)),
    ]
    assert [(f.in_features, f.out_features) for f in linears] == [(400, 120), (120, 84), (84, 10)]
    assert sum(isinstance(m, nn.Sigmoid) for m in model.modules()) == 4
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 2
    assert sum(p.numel() for p in model.parameters()) == 61_706  # d2l's LeNet


def test_xavier_init_zero_bias() -> None:
    conv = LeNet(init="xavier").features[0]
    bound = (6 / (25 * 1 + 25 * 6)) ** 0.5  # xavier_uniform: sqrt(6 / (fan_in + fan_out))
    assert float(conv.weight.abs().max()) <= bound and torch.all(conv.bias == 0)


GRID = list(
    itertools.product(
        ["sigmoid", "tanh", "relu"],
        ["avg", "max"],
        [((6, 16), (5, 5), (2, 0)), ((6, 16, 32), (5, 5, 3), (2, 0, 1)), ((8,), (3,), (1,))],
        [(120, 84), (64,), ()],
        [False, True],
    )
)


@pytest.mark.parametrize(("activation", "pool", "convs", "fc", "batch_norm"), GRID)
def test_knob_grid_forward_backward(
    activation: str, pool: str, convs: tuple, fc: tuple, batch_norm: bool
) -> None:
    channels, kernels, paddings = convs
    model = LeNet(
        conv_channels=channels,
        kernel_sizes=kernels,
        paddings=paddings,
        fc_widths=fc,
        activation=activation,
        pool=pool,
        batch_norm=batch_norm,
        dropout=0.1,
    )
    out = model(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    out.sum().backward()
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert n_linear == len(fc) + 1
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == len(channels)


def test_other_sizes_and_channels() -> None:
    assert LeNet(in_channels=3, num_classes=7, input_size=96)(torch.randn(2, 3, 96, 96)).shape == (
        2,
        7,
    )


def test_locally_connected_first_layer() -> None:
    model = LeNet(first_layer="local")
    assert isinstance(model.features[0], LocallyConnected2d)
    # 28x28 positions x 6 filters x (25 weights) + bias per position: unshared weights.
    assert sum(p.numel() for p in model.features[0].parameters()) == 28 * 28 * 6 * 25 + 6 * 28 * 28
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_conv1x1_gap_head_has_no_linear_layer() -> None:
    model = LeNet(head="conv1x1_gap", activation="relu")
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel_sizes": [5]}, "one entry per conv layer"),
        ({"activation": "swish"}, "unknown activation 'swish'"),
        ({"pool": "median"}, "unknown pool 'median'"),
        ({"init": "orthogonal"}, "unknown init 'orthogonal'"),
        ({"head": "mlp"}, "head must be"),
        ({"input_size": 8}, "shrinks to nothing"),
    ],
)
def test_bad_knobs(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LeNet(**kwargs)
