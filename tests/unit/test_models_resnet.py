"""ResNet: Table 1 of He et al., torchvision's parameter counts and outputs, and the knobs."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision
from torch import nn

from cnnlab.models import resnet
from cnnlab.models.resnet import RESNET_TABLE, Bottleneck, Residual, ResNet
from conftest import randomise_batch_norm

IMAGENET = {"in_channels": 3, "num_classes": 1000}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def torchvision_to_ours(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ResNet state dict to our module names.

        conv1.*, bn1.*                ->  stem.conv.*, stem.bn.*
        layer{i}.{j}.conv{k}/bn{k}.*  ->  stages.{i-1}.{j}.conv{k}/bn{k}.*  (same block layout)
        layer{i}.{j}.downsample.*     ->  stages.{i-1}.{j}.shortcut.*       (1x1 conv, BN)
        fc.*                          ->  head.fc.*

    Loading the result with ``strict=True`` then checks that no tensor is missing, left over or
    of another shape.
    """
    renamed = {}
    for key, value in state_dict.items():
        key = re.sub(r"^conv1\.", "stem.conv.", key)
        key = re.sub(r"^bn1\.", "stem.bn.", key)
        key = re.sub(r"^layer(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.", key)
        key = key.replace(".downsample.", ".shortcut.")
        key = re.sub(r"^fc\.", "head.fc.", key)
        renamed[key] = value.clone()
    return renamed


def _forward_backward(model: nn.Module, size: int, batch: int = 2) -> torch.Tensor:
    model.train()
    out = model(torch.randn(batch, 1, size, size))
    assert out.shape == (batch, 10)
    loss = nn.functional.cross_entropy(out, torch.arange(batch) % 10)
    model.zero_grad()
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.stem.conv.weight.grad.abs().sum() > 0  # the gradient reaches the first layer
    return out


# --- Table 1 and torchvision ------------------------------------------------------------------


@pytest.mark.parametrize(
    "depth, count",
    [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032), (101, 44_549_160),
     (152, 60_192_808)],
)
def test_parameter_count_equals_torchvision(depth: int, count: int) -> None:
    with torch.device("meta"):  # shapes only: no initialisation, no forward
        ours = getattr(resnet, f"resnet{depth}")(**IMAGENET)
        theirs = getattr(torchvision.models, f"resnet{depth}")()
    assert n_params(ours) == n_params(theirs) == count


@pytest.mark.parametrize("depth", list(RESNET_TABLE))
def test_depth_counts_weight_layers(depth: int) -> None:
    block, layers = RESNET_TABLE[depth]
    convs_per_block = 2 if block is Residual else 3
    # The depth counts the stem conv, the convs on the residual paths and the FC layer.
    assert 1 + convs_per_block * sum(layers) + 1 == depth


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_outputs_equal_torchvision(name: str) -> None:
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)()
    randomise_batch_norm(theirs)
    theirs.double().eval()
    with torch.device("meta"):  # every tensor comes from theirs, so skip initialising ours
        ours = getattr(resnet, name)(**IMAGENET)
    ours.load_state_dict(torchvision_to_ours(theirs.state_dict()), strict=True, assign=True)
    ours.eval()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    # A real check: BN is not the identity and the logits are far from zero and from each
    # other, so a mis-copied tensor could not hide under the tolerance.
    assert expected.std() > 0.01 and (expected[0] - expected[1]).abs().max() > 1e-3
    assert (got - expected).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "stem, size, expected",
    [("imagenet", 224, [56, 56, 28, 14, 7]), ("imagenet", 96, [24, 24, 12, 6, 3]),
     ("small", 28, [28, 28, 14, 7, 4])],
)
def test_stage_output_sizes(stem: str, size: int, expected: list[int]) -> None:
    # Table 1's "output size" column: conv1 + pool to 1/4, then each later stage halves.
    model = resnet.resnet18(stem=stem, width=8).eval()
    x = model.stem(torch.zeros(1, 1, size, size))
    sizes = [x.shape[-1]]
    for stage in model.stages:
        x = stage(x)
        sizes.append(x.shape[-1])
    assert sizes == expected
    assert x.shape[1] == 8 * 8


def test_projection_shortcuts_only_where_shape_changes() -> None:
    with torch.device("meta"):
        r18, r50 = resnet.resnet18(), resnet.resnet50()
    projections = [
        [i for i, b in enumerate(s) if not isinstance(b.shortcut, nn.Identity)] for s in r18.stages
    ]
    assert projections == [[], [0], [0], [0]]  # stage 1 keeps 64 channels and the size
    # Bottlenecks widen 64 -> 256 already in stage 1.
    assert [isinstance(s[0].shortcut, nn.Identity) for s in r50.stages] == [False] * 4
    assert all(isinstance(b.shortcut, nn.Identity) for s in r50.stages for b in s[1:])


def test_bottleneck_strides_in_its_3x3_conv() -> None:
    block = Bottleneck(256, 128, stride=2)
    assert block.conv1.stride == (1, 1) and block.conv1.kernel_size == (1, 1)
    assert block.conv2.stride == (2, 2) and block.conv2.kernel_size == (3, 3)
    assert block.conv3.out_channels == 512
    assert block(torch.randn(2, 256, 8, 8)).shape == (2, 512, 4, 4)


# --- the course settings ----------------------------------------------------------------------


def test_resnet18_96_forward_backward() -> None:
    torch.manual_seed(0)
    _forward_backward(resnet.resnet18(), 96)


def test_preact_resnet18_96_forward_backward() -> None:
    torch.manual_seed(0)
    _forward_backward(resnet.resnet18(preact=True), 96)


@pytest.mark.parametrize("preact", [False, True])
def test_small_stem_resnet18_28_forward_backward(preact: bool) -> None:
    torch.manual_seed(0)
    _forward_backward(resnet.resnet18(stem="small", preact=preact), 28)


def test_resnet50_96_forward_backward() -> None:
    torch.manual_seed(0)
    _forward_backward(resnet.resnet50(), 96)


def test_preact_bottleneck_forward_backward() -> None:
    torch.manual_seed(0)
    _forward_backward(resnet.resnet50(preact=True, width=16), 64)


def test_custom_layers_and_width_from_strings() -> None:
    # What a YAML can say: block by name, layers as a list.
    model = ResNet(block="bottleneck", layers=[1, 1], width=8, stem="small")
    assert len(model.stages) == 2 and model.head.fc.in_features == 16 * 4
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)


# --- pre-activation ---------------------------------------------------------------------------


def _first_leaf(module: nn.Module) -> nn.Module:
    return next(m for m in module.modules() if not list(m.children()))


def test_preact_puts_batch_norm_before_each_conv() -> None:
    with torch.device("meta"):
        plain, pre = resnet.resnet18(), resnet.resnet18(preact=True)
        pre50 = resnet.resnet50(preact=True)
    for stage in plain.stages:
        assert all(isinstance(_first_leaf(b), nn.Conv2d) for b in stage)
    for stage in [*pre.stages, *pre50.stages]:
        assert all(isinstance(_first_leaf(b), nn.BatchNorm2d) for b in stage)
    block = pre.stages[1][0]
    # Pre-activation BNs normalise the conv's *input*; post-activation ones its output.
    assert block.bn1.num_features == block.conv1.in_channels == 64
    assert plain.stages[1][0].bn1.num_features == plain.stages[1][0].conv1.out_channels == 128
    # The stem is the bare conv (the first block activates it); the head activates the last sum.
    assert not any(isinstance(m, nn.BatchNorm2d) for m in pre.stem)
    assert [type(m) for m in pre.head][:3] == [nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.head)


def test_preact_identity_path_is_clean() -> None:
    # He et al. 2016b: with the residual branch silenced, a pre-activation unit passes its input
    # through unchanged (negative values included); the original unit clips it with a ReLU.
    x = torch.randn(2, 8, 6, 6)
    pre, plain = Residual(8, 8, preact=True).eval(), Residual(8, 8).eval()
    with torch.no_grad():
        pre.conv2.weight.zero_()
        plain.bn2.weight.zero_()
        plain.bn2.bias.zero_()
    assert torch.equal(pre(x), x)
    assert torch.equal(plain(x), torch.relu(x))


def test_preact_changes_the_function_not_the_conv_weights() -> None:
    with torch.device("meta"):
        plain, pre = resnet.resnet18(), resnet.resnet18(preact=True)
    conv_shapes = [m.weight.shape for m in plain.modules() if isinstance(m, nn.Conv2d)]
    pre_shapes = [m.weight.shape for m in pre.modules() if isinstance(m, nn.Conv2d)]
    assert conv_shapes == pre_shapes


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"block": "wide"}, "unknown block"),
        ({"layers": [2, 0, 2, 2]}, "each >= 1"),
        ({"layers": []}, "each >= 1"),
        ({"stem": "cifar"}, "unknown stem"),
        ({"width": 0}, "width"),
    ],
)
def test_bad_knobs_raise(kwargs: dict, message: str) -> None:
    with torch.device("meta"), pytest.raises(ValueError, match=message):
        ResNet(**kwargs)
