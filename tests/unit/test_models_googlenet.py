"""GoogLeNet: the paper's table, parameter counts, the variant knobs and the aux-head contract."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from torch import nn

from cnnlab.models.googlenet import (
    INCEPTION_CHANNELS,
    AuxClassifier,
    GoogLeNet,
    Inception,
)

IMAGE_SIZE = 96  # the course size for GoogLeNet
LECTURE_PARAMS = 5_977_530  # in_channels=1, num_classes=10, no BN, no aux heads


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def googlenet() -> GoogLeNet:
    torch.manual_seed(0)
    return GoogLeNet()


def inception_blocks(model: nn.Module) -> list[Inception]:
    return [m for m in model.modules() if isinstance(m, Inception)]


def test_lecture_parameter_count(googlenet: GoogLeNet) -> None:
    assert n_params(googlenet) == LECTURE_PARAMS


def test_table_chains_from_192_to_1024(googlenet: GoogLeNet) -> None:
    blocks = inception_blocks(googlenet)
    assert len(blocks) == len(INCEPTION_CHANNELS) == 9
    widths = [b.out_channels for b in blocks]
    assert widths == [256, 480, 512, 512, 512, 528, 832, 832, 1024]
    assert googlenet.fc[-1].in_features == 1024


@pytest.mark.parametrize(
    "knobs", [{}, {"batch_norm": True}, {"factorized": True}, {"residual": True}]
)
def test_inception_output_channels(knobs: dict) -> None:
    c1, c2, c3, c4 = 64, (96, 128), (16, 32), 32
    block = Inception(192, c1, c2, c3, c4, **knobs)
    out = block(torch.randn(2, 192, 12, 12))
    assert out.shape == (2, c1 + c2[1] + c3[1] + c4, 12, 12) == (2, 256, 12, 12)
    assert block.out_channels == 256


def test_inception_parameter_count_by_hand() -> None:
    # Block 3a: weights + biases of each conv, k*k*in*out + out.
    def conv(k: int, cin: int, cout: int) -> int:
        return k * k * cin * cout + cout

    expected = (
        conv(1, 192, 64)
        + conv(1, 192, 96)
        + conv(3, 96, 128)
        + conv(1, 192, 16)
        + conv(5, 16, 32)
        + conv(1, 192, 32)
    )
    assert n_params(Inception(192, 64, (96, 128), (16, 32), 32)) == expected == 163_696


@pytest.mark.parametrize(
    ("knobs", "params"),
    [
        ({}, LECTURE_PARAMS),
        ({"batch_norm": True}, 5_984_810),
        ({"factorized": True}, 4_052_218),
        ({"residual": True}, 11_760_218),
        ({"aux_logits": True}, 10_327_758),
    ],
)
def test_forward_backward_at_course_size(knobs: dict, params: int) -> None:
    torch.manual_seed(0)
    model = GoogLeNet(**knobs).train()
    assert n_params(model) == params
    out = model(torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE))
    if knobs.get("aux_logits"):
        logits, aux = out
        assert len(aux) == 2 and all(a.shape == (2, 10) for a in aux)
        loss = logits.logsumexp(1).sum() + 0.3 * sum(a.logsumexp(1).sum() for a in aux)
    else:
        logits = out
        loss = logits.logsumexp(1).sum()
    assert logits.shape == (2, 10)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_aux_heads_only_in_training_mode() -> None:
    torch.manual_seed(0)
    model = GoogLeNet(aux_logits=True)
    x = torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    train_out = model.train()(x)
    assert isinstance(train_out, tuple) and isinstance(train_out[1], list)
    with torch.no_grad():
        eval_out = model.eval()(x)
    assert isinstance(eval_out, torch.Tensor) and eval_out.shape == (2, 10)
    assert set(model.aux_heads) == {"4a", "4d"}
    # 4a outputs 512 channels, 4d 528: the heads hang off the paper's blocks.
    assert [h.conv[0].in_channels for h in model.aux_heads.values()] == [512, 528]


def test_no_aux_heads_returns_plain_logits_in_training(googlenet: GoogLeNet) -> None:
    assert googlenet.aux_heads is None
    out = googlenet.train()(torch.randn(2, 1, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)


def test_aux_head_equals_torchvision_inception_aux() -> None:
    # torchvision's InceptionAux is the paper's head with the same adaptive 4x4 pool and BN.
    tv = importlib.import_module("torchvision.models.googlenet").InceptionAux(512, 10)
    ours = AuxClassifier(512, 10, batch_norm=True)
    theirs = tv.state_dict()
    assert [t.shape for t in ours.state_dict().values()] == [t.shape for t in theirs.values()]
    ours.load_state_dict(dict(zip(ours.state_dict(), theirs.values(), strict=True)))
    tv.conv.bn.eps = ours.conv[1].eps  # torchvision uses 1e-3, PyTorch's BN default is 1e-5
    x = torch.randn(2, 512, 6, 6)
    torch.testing.assert_close(ours.eval()(x), tv.eval()(x))


def test_factorized_removes_5x5_and_square_3x3() -> None:
    model = GoogLeNet(factorized=True)
    kernels = [m.kernel_size for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert (5, 5) not in kernels
    inner = [
        m.kernel_size
        for block in inception_blocks(model)
        for m in block.modules()
        if isinstance(m, nn.Conv2d)
    ]
    assert set(inner) == {(1, 1), (1, 3), (3, 1)}
    # Per block: 4 1x1 convs, 2 convs for the 3x3 branch, 4 for the 5x5 branch.
    assert len(inner) == 9 * 10


def test_factorized_inception_parameter_count_by_hand() -> None:
    # 3a with narrow intermediates: 3x3 -> 1x3 (96->96) + 3x1 (96->128);
    # 5x5 -> 1x3, 3x1, 1x3 (16->16) + 3x1 (16->32).
    def conv(kh: int, kw: int, cin: int, cout: int) -> int:
        return kh * kw * cin * cout + cout

    expected = (
        conv(1, 1, 192, 64)
        + conv(1, 1, 192, 96)
        + conv(1, 3, 96, 96)
        + conv(3, 1, 96, 128)
        + conv(1, 1, 192, 16)
        + 3 * conv(1, 3, 16, 16)
        + conv(3, 1, 16, 32)
        + conv(1, 1, 192, 32)
    )
    block = Inception(192, 64, (96, 128), (16, 32), 32, factorized=True)
    assert n_params(block) == expected
    assert expected < n_params(Inception(192, 64, (96, 128), (16, 32), 32))


def test_batch_norm_after_every_conv() -> None:
    model = GoogLeNet(batch_norm=True)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(bns) == 3 + 9 * 6
    assert all(c.bias is None for c in convs)  # redundant before BN
    # Each conv loses its bias (out) and gains BN's scale and shift (2 * out).
    assert n_params(model) == LECTURE_PARAMS + sum(c.out_channels for c in convs)


def test_residual_projection_and_shortcuts() -> None:
    model = GoogLeNet(residual=True)
    extra, identities = 0, []
    for name, block in zip(INCEPTION_CHANNELS, inception_blocks(model), strict=True):
        out = block.out_channels
        extra += out * out + out  # linear 1x1 projection
        if isinstance(block.shortcut, nn.Identity):
            identities.append(name)
        else:
            extra += block.shortcut[0].in_channels * out + out  # projected shortcut
    assert identities == ["4b", "4c", "5a"]
    assert n_params(model) == LECTURE_PARAMS + extra


def test_residual_block_math() -> None:
    torch.manual_seed(0)
    block = Inception(32, 8, (8, 8), (4, 8), 8, residual=True, residual_scale=0.2)
    x = torch.randn(2, 32, 5, 5)
    branches = torch.cat(
        [block.branch1(x), block.branch2(x), block.branch3(x), block.branch4(x)], dim=1
    )
    expected = torch.relu(x + 0.2 * block.project(branches))
    torch.testing.assert_close(block(x), expected)
    with torch.no_grad():  # a zero residual leaves ReLU(shortcut(x))
        block.project.weight.zero_()
        block.project.bias.zero_()
    torch.testing.assert_close(block(x), torch.relu(x))


def test_dropout_before_final_fc() -> None:
    model = GoogLeNet(dropout=0.4)
    assert isinstance(model.fc[0], nn.Dropout) and model.fc[0].p == 0.4
    assert n_params(model) == LECTURE_PARAMS


def test_minimum_input_size(googlenet: GoogLeNet) -> None:
    # Measured: every stride-2 layer pads, mapping a side n to ceil(n/2), so nothing vanishes
    # and a 1x1 image is the smallest that runs; a 0x0 one fails in the stem.
    minimum = 1
    model = googlenet.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, minimum, minimum)).shape == (2, 10)
        with pytest.raises(RuntimeError):
            model(torch.randn(2, 1, minimum - 1, minimum - 1))


@pytest.mark.parametrize("size", [1, 31, 32, 33, 96])
def test_last_feature_map_is_ceil_size_over_32(googlenet: GoogLeNet, size: int) -> None:
    with torch.no_grad():
        x = googlenet.b3(googlenet.b2(googlenet.b1(torch.randn(1, 1, size, size))))
        x = googlenet.b4(x)
    assert x.shape[-1] == math.ceil(size / 32)


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"residual": True, "residual_scale": 0.0}, "residual_scale"),
        ({"init": "orthogonal"}, "init"),
        ({"width_ratio": 0}, "width_ratio"),
        ({"width_ratio": 2.5}, "width_ratio"),
    ],
)
def test_bad_knobs_raise(knobs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GoogLeNet(**knobs)


@pytest.mark.parametrize(
    "knobs", [{}, {"batch_norm": True, "factorized": True}, {"residual": True}]
)
def test_width_ratio_divides_every_conv_width(knobs: dict) -> None:
    """width_ratio=4 (the laptop scale's narrow GoogLeNet): each conv has a quarter of the
    lecture net's output channels, the table's shape is kept, and the net still classifies."""
    wide, narrow = GoogLeNet(**knobs), GoogLeNet(width_ratio=4, **knobs)
    widths = [(m.in_channels, m.out_channels) for m in wide.modules() if isinstance(m, nn.Conv2d)]
    narrowed = [m.out_channels for m in narrow.modules() if isinstance(m, nn.Conv2d)]
    assert narrowed == [max(1, out // 4) for _, out in widths]
    assert narrow.fc[-1].in_features == 1024 // 4
    assert n_params(narrow) < n_params(wide) / 10
    assert narrow(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
