"""VGG: the paper's table, torchvision's parameter counts and outputs, and the course sizes."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnlab.models import vgg
from cnnlab.models.vgg import VGG, VGG_CONFIGS, vgg_block
from conftest import randomise_batch_norm

IMAGENET = {"in_channels": 3, "num_classes": 1000}
NAMES = [f"vgg{d}{bn}" for bn in ("", "_bn") for d in (11, 13, 16, 19)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_torchvision_vgg(ours: VGG, theirs: nn.Module) -> None:
    """Copy a torchvision VGG's weights and BN statistics into ours (sharing no storage).

    torchvision keeps every conv/BN/ReLU/pool in one flat ``features`` Sequential and puts an
    adaptive 7x7 average pool (the identity at 224 px) before ``classifier``; ours nests them in
    ``vgg_block``s and starts ``classifier`` with a Flatten. Neither difference changes the
    order of the tensors, so entry i of one state dict is entry i of the other. We pair them in
    order and require each pair to be the same kind of tensor (weight, bias, running_mean, ...)
    with the same shape, so a misaligned pairing fails here instead of passing silently.
    """
    src, dst = theirs.state_dict(), ours.state_dict()
    assert len(src) == len(dst), (len(src), len(dst))
    mapped = {}
    for (src_key, value), (dst_key, target) in zip(src.items(), dst.items(), strict=True):
        assert src_key.rsplit(".", 1)[1] == dst_key.rsplit(".", 1)[1], (src_key, dst_key)
        assert value.shape == target.shape, (src_key, dst_key, value.shape, target.shape)
        mapped[dst_key] = value.clone()
    ours.load_state_dict(mapped, assign=True)


@pytest.fixture(scope="module")
def vgg11_224() -> VGG:
    torch.manual_seed(0)
    return vgg.vgg11(input_size=224)


# --- the paper's table ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VGG_CONFIGS))
def test_configs_are_table_1(name: str) -> None:
    blocks = VGG_CONFIGS[name]
    assert [c for _, c in blocks] == [64, 128, 256, 512, 512]
    # The depth in the name counts the weight layers: the convolutions plus three FC layers.
    assert sum(n for n, _ in blocks) + 3 == int(name.removeprefix("vgg"))
    with torch.device("meta"):
        model = VGG(arch=name)
    assert sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules()) == int(name[3:])


def test_vgg_block_shapes_and_layers() -> None:
    block = vgg_block(2, 3, 8)
    assert [type(m) for m in block] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.MaxPool2d]
    assert all(m.kernel_size == (3, 3) and m.padding == (1, 1) for m in block[::2][:2])
    assert block(torch.zeros(2, 3, 12, 10)).shape == (2, 8, 6, 5)
    bn_block = vgg_block(1, 3, 8, batch_norm=True)
    assert [type(m) for m in bn_block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]


# --- torchvision as the oracle ----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_equals_torchvision(name: str) -> None:
    with torch.device("meta"):  # counting needs shapes only, not 140M initialised weights
        ours = getattr(vgg, name)(**IMAGENET, input_size=224)
        theirs = getattr(torchvision.models, name)()
    assert n_params(ours) == n_params(theirs)


@pytest.mark.parametrize(
    "name, count",
    [("vgg11", 132_863_336), ("vgg13", 133_047_848), ("vgg16", 138_357_544),
     ("vgg19", 143_667_240)],
)
def test_parameter_count_literal(name: str, count: int) -> None:
    with torch.device("meta"):
        assert n_params(getattr(vgg, name)(**IMAGENET, input_size=224)) == count


@pytest.mark.parametrize("name", ["vgg16", "vgg16_bn"])
def test_outputs_equal_torchvision(name: str) -> None:
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)()
    randomise_batch_norm(theirs)
    theirs.eval()
    with torch.device("meta"):  # ours gets every tensor from theirs, so skip initialising it
        ours = getattr(vgg, name)(**IMAGENET, input_size=224)
    load_torchvision_vgg(ours, theirs)
    ours.eval()
    assert n_params(ours) == n_params(theirs)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    # A real check: the logits are far from zero and from each other, so a mis-copied layer
    # could not hide under the 1e-5 tolerance.
    assert expected.abs().max() > 0.05 and expected.std() > 0.01
    assert (got - expected).abs().max() <= 1e-5


# --- the course settings ----------------------------------------------------------------------


def _forward_backward(model: nn.Module, size: int) -> None:
    model.train()
    x = torch.randn(2, 1, size, size)
    out = model(x)
    assert out.shape == (2, 10)
    loss = nn.functional.cross_entropy(out, torch.tensor([0, 9]))
    model.zero_grad()
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.features[0][0].weight.grad.abs().sum() > 0  # the gradient reaches the input


def test_vgg11_224_forward_backward(vgg11_224: VGG) -> None:
    _forward_backward(vgg11_224, 224)


@pytest.mark.parametrize(
    "width_ratio, size", [(1, 96), (4, 224), (4, 96)], ids=["vgg11-96", "narrow-224", "narrow-96"]
)
def test_forward_backward(width_ratio: int, size: int) -> None:
    torch.manual_seed(0)
    _forward_backward(vgg.vgg11(width_ratio=width_ratio, input_size=size), size)


def test_layer_by_layer_view_is_five_blocks_then_classifier(vgg11_224: VGG) -> None:
    # d2l prints the output shape of each top-level layer and sees 8 results for the 11 weight
    # layers: the 8 convolutions hide inside 5 blocks, which report one shape each.
    x = torch.zeros(1, 1, 224, 224)
    shapes = []
    with torch.no_grad():
        for layer in [*vgg11_224.features, *vgg11_224.classifier]:
            x = layer(x)
            shapes.append(tuple(x.shape))
    assert len(vgg11_224.features) == 5
    assert shapes[:5] == [(1, 64, 112, 112), (1, 128, 56, 56), (1, 256, 28, 28),
                          (1, 512, 14, 14), (1, 512, 7, 7)]
    assert shapes[5] == (1, 512 * 7 * 7) and shapes[-1] == (1, 10)
    top_level = [*vgg11_224.features, *vgg11_224.classifier]
    with_weights = [m for m in top_level if any(True for _ in m.parameters())]
    assert len(with_weights) == 8  # 5 blocks + 3 FC layers


def test_narrow_vgg11_divides_conv_widths_only() -> None:
    with torch.device("meta"):
        model = vgg.vgg11(width_ratio=4, input_size=224)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 64, 128, 128, 128, 128]
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [
        (128 * 7 * 7, 4096), (4096, 4096), (4096, 10)
    ]
    # Every 3x3 conv has 9*in*out weights and out biases; every FC in*out + out.
    conv_params = sum(9 * c.in_channels * c.out_channels + c.out_channels for c in convs)
    fc_params = sum(f.in_features * f.out_features + f.out_features for f in fcs)
    assert n_params(model) == conv_params + fc_params == 43_093_322


@pytest.mark.parametrize("size, final", [(224, 7), (96, 3), (84, 2), (56, 1), (32, 1)])
def test_flatten_width_follows_input_size(size: int, final: int) -> None:
    with torch.device("meta"):
        model = vgg.vgg11(width_ratio=4, input_size=size)
    assert model.classifier[1].in_features == 128 * final * final


def test_custom_arch_tuple_and_knobs() -> None:
    model = VGG(arch=[[1, 8], [2, 16]], input_size=16, fc_width=32, dropout=0.2, batch_norm=True)
    assert len(model.features) == 2
    assert model.classifier[1].in_features == 16 * 4 * 4
    assert model.classifier[3].p == 0.2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"arch": "vgg12"}, "unknown arch"),
        ({"arch": [[1, 8], [0, 16]]}, "pairs of positive"),
        ({"width_ratio": 0}, "width_ratio"),
        ({"width_ratio": 128}, "no channels"),
        ({"dropout": 1.0}, "dropout"),
        ({"input_size": 28}, "at least 32"),
    ],
)
def test_bad_knobs_raise(kwargs: dict, message: str) -> None:
    with torch.device("meta"), pytest.raises(ValueError, match=message):
        VGG(**kwargs)
