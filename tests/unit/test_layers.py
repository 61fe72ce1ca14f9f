"""Shared layers: the two local response normalisations and the locally connected layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.layers import (
    InterChannelLRN,
    IntraChannelLRN,
    LocallyConnected2d,
    conv_output_size,
    init_weights,
    make_lrn,
)

# The lecture's toy setting: k = 0, alpha = beta = 1, n = 2, so b = a / (sum of a^2 in window),
# and with n = 2 the window is n/2 = 1 neighbour on each side (3 wide), as the formula reads.
TOY = {"size": 2, "k": 0.0, "alpha": 1.0, "beta": 1.0}


def test_inter_channel_lrn_lecture_toy_example_by_hand() -> None:
    # N = 4 channels at two positions (1 x 2 map): a = [1, 2, 3, 4] and a = [2, 0, -1, 1].
    a = torch.tensor([[1.0, 2.0], [2.0, 0.0], [3.0, -1.0], [4.0, 1.0]]).reshape(1, 4, 1, 2)
    # Position 0, squares [1, 4, 9, 16]; channel i sums channels max(0, i-1) .. min(3, i+1):
    #   i=0: 1/(1+4)      = 1/5    i=1: 2/(1+4+9) = 2/14   i=2: 3/(4+9+16) = 3/29
    #   i=3: 4/(9+16)     = 4/25
    # Position 1, squares [4, 0, 1, 1]:
    #   i=0: 2/(4+0)      = 1/2    i=1: 0/(4+0+1) = 0      i=2: -1/(0+1+1) = -1/2
    #   i=3: 1/(1+1)      = 1/2
    expected = torch.tensor(
        [[1 / 5, 1 / 2], [2 / 14, 0.0], [3 / 29, -1 / 2], [4 / 25, 1 / 2]]
    ).reshape(1, 4, 1, 2)
    torch.testing.assert_close(InterChannelLRN(**TOY)(a), expected)


def test_intra_channel_lrn_lecture_toy_example_by_hand() -> None:
    # N = 4 channels of 3x3; with n = 2 every position sums the 3x3 square around it, clipped at
    # the border (zero padding), within its own channel only.
    c0 = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0], [2.0, 0.0, 1.0]])
    c2 = torch.zeros(3, 3)
    c2[1, 1] = 3.0
    a = torch.stack([c0, 2 * c0, c2, torch.ones(3, 3)]).unsqueeze(0)
    # Channel 0, squares [[1, 4, 0], [0, 1, 1], [4, 0, 1]]:
    #   (0,0): 1/(1+4+0+1)         = 1/6    (0,1): 2/(1+4+0+0+1+1) = 2/7   (0,2): 0/6 = 0
    #   (1,0): 0/(1+4+0+1+4+0) = 0         (1,1): 1/(all nine = 12) = 1/12
    #   (1,2): 1/(4+0+1+1+0+1)     = 1/7
    #   (2,0): 2/(0+1+4+0)         = 2/5    (2,1): 0/7 = 0                  (2,2): 1/(1+1+0+1) = 1/3
    e0 = torch.tensor([[1 / 6, 2 / 7, 0.0], [0.0, 1 / 12, 1 / 7], [2 / 5, 0.0, 1 / 3]])
    # Channel 1 = 2 * channel 0: numerator x2, squares x4, so the output halves.
    # Channel 2: every 3x3 window holds the centre 3 (square 9): 3/9 at the centre, 0 elsewhere.
    e2 = torch.zeros(3, 3)
    e2[1, 1] = 1 / 3
    # Channel 3 (all ones): 1 / (cells inside the map): corners 1/4, edges 1/6, centre 1/9.
    e3 = torch.tensor([[1 / 4, 1 / 6, 1 / 4], [1 / 6, 1 / 9, 1 / 6], [1 / 4, 1 / 6, 1 / 4]])
    expected = torch.stack([e0, e0 / 2, e2, e3]).unsqueeze(0)
    torch.testing.assert_close(IntraChannelLRN(**TOY)(a), expected)


@pytest.mark.parametrize("n", [1, 3, 5, 7])
def test_inter_channel_lrn_equals_torch_for_odd_n(n: int) -> None:
    x = torch.randn(2, 9, 4, 5)
    k, alpha, beta = 2.0, 0.05, 0.75
    ours = InterChannelLRN(n, k=k, alpha=alpha, beta=beta)(x)
    # torch divides alpha by the window size; ours multiplies the plain sum (the paper).
    reference = nn.LocalResponseNorm(size=n, alpha=alpha * n, beta=beta, k=k)(x)
    torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize("n", [2, 4, 6])
def test_inter_channel_lrn_even_n_is_torch_with_one_more_channel(n: int) -> None:
    x = torch.randn(2, 9, 3, 3)
    k, alpha, beta = 1.0, 0.5, 0.75
    ours = InterChannelLRN(n, k=k, alpha=alpha, beta=beta)(x)
    # torch's even window is lopsided (n//2 below, n//2 - 1 above); ours is symmetric, n + 1 wide.
    lopsided = nn.LocalResponseNorm(size=n, alpha=alpha * n, beta=beta, k=k)(x)
    assert not torch.allclose(ours, lopsided)
    symmetric = nn.LocalResponseNorm(size=n + 1, alpha=alpha * (n + 1), beta=beta, k=k)(x)
    torch.testing.assert_close(ours, symmetric)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_intra_channel_lrn_matches_a_direct_window_sum(n: int) -> None:
    x = torch.randn(2, 3, 6, 5)
    k, alpha, beta = 2.0, 0.1, 0.75
    r = n // 2
    # A plain convolution with a (2r+1)^2 kernel of ones per channel sums each window.
    ones = torch.ones(3, 1, 2 * r + 1, 2 * r + 1)
    sums = F.conv2d(x.square(), ones, padding=r, groups=3)
    expected = x / (k + alpha * sums) ** beta
    torch.testing.assert_close(IntraChannelLRN(n, k=k, alpha=alpha, beta=beta)(x), expected)


@pytest.mark.parametrize("cls", [InterChannelLRN, IntraChannelLRN])
def test_lrn_keeps_shape_dtype_and_is_differentiable(cls: type[nn.Module]) -> None:
    layer = cls(3, k=2.0, alpha=0.1, beta=0.75)
    x = torch.randn(2, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    assert layer(x).dtype == torch.float64
    half = torch.randn(2, 5, 4, 4).to(torch.bfloat16)
    out = layer(half)
    assert out.dtype == torch.bfloat16 and out.shape == half.shape
    torch.testing.assert_close(out.float(), layer(half.float()), atol=2e-2, rtol=2e-2)
    # channels_last inputs (the GPU path) give the same numbers.
    y = torch.randn(2, 5, 4, 4)
    torch.testing.assert_close(layer(y.to(memory_format=torch.channels_last)), layer(y))


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("cls", [InterChannelLRN, IntraChannelLRN])
def test_lrn_on_channels_last_keeps_the_layout_and_the_numbers(
    cls: type[nn.Module], n: int
) -> None:
    # channels_last is the dataset default: LRN must neither convert to NCHW nor change values.
    layer = cls(n, k=2.0, alpha=0.1, beta=0.75)
    x = torch.randn(3, 7, 5, 6, dtype=torch.float64)
    nhwc = x.to(memory_format=torch.channels_last).requires_grad_()
    out = layer(nhwc)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, layer(x))
    assert torch.autograd.gradcheck(layer, (nhwc,))


def test_lrn_has_no_parameters_and_the_paper_defaults() -> None:
    layer = InterChannelLRN()
    assert (layer.size, layer.k, layer.alpha, layer.beta) == (5, 2.0, 1e-4, 0.75)
    assert sum(p.numel() for p in layer.parameters()) == 0


def test_make_lrn_and_bad_values() -> None:
    assert make_lrn("none") is None
    assert isinstance(make_lrn("inter", 3), InterChannelLRN)
    assert isinstance(make_lrn("intra", 3), IntraChannelLRN)
    with pytest.raises(ValueError, match="none, inter, intra"):
        make_lrn("across")
    with pytest.raises(ValueError, match="size"):
        InterChannelLRN(0)
    with pytest.raises(ValueError, match="alpha"):
        IntraChannelLRN(3, alpha=-1.0)


def _shared_weights_copy(conv: nn.Conv2d, local: LocallyConnected2d) -> None:
    """Give every output position of ``local`` the filters (and bias) of ``conv``."""
    with torch.no_grad():
        # unfold lays a patch out as (channel, row, column), the order of conv.weight's dims.
        local.weight.copy_(conv.weight.reshape(conv.out_channels, -1).expand_as(local.weight))
        local.bias.copy_(conv.bias[:, None, None].expand_as(local.bias))


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(3, 1, 0), (5, 1, 2), (3, 2, 1)])
def test_locally_connected_with_shared_weights_is_a_convolution(
    kernel: int, stride: int, padding: int
) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, kernel, stride=stride, padding=padding)
    local = LocallyConnected2d(3, 4, 9, kernel, stride=stride, padding=padding)
    _shared_weights_copy(conv, local)
    x = torch.randn(2, 3, 9, 9)
    expected = F.conv2d(x, conv.weight, conv.bias, stride=stride, padding=padding)
    torch.testing.assert_close(local(x), expected)


def test_locally_connected_weights_are_not_shared() -> None:
    torch.manual_seed(0)
    local = LocallyConnected2d(1, 1, 4, 3)  # a 2x2 output: four independent 3x3 filters
    with torch.no_grad():
        local.weight.zero_()
        local.bias.zero_()
        local.weight[3] = 1.0  # only the bottom-right position sees anything
    out = local(torch.ones(1, 1, 4, 4))
    torch.testing.assert_close(out, torch.tensor([[[[0.0, 0.0], [0.0, 9.0]]]]))


def test_locally_connected_shape_and_parameter_count() -> None:
    local = LocallyConnected2d(3, 8, 28, 5, stride=1, padding=2)
    out = local(torch.randn(2, 3, 28, 28))
    assert out.shape == (2, 8, 28, 28)
    positions = 28 * 28
    # One 8 x (3*5*5) filter bank per position, plus one bias per output unit.
    assert sum(p.numel() for p in local.parameters()) == positions * 8 * 3 * 25 + 8 * positions
    assert conv_output_size(28, 5, 2, 0) == 12
    no_bias = LocallyConnected2d(2, 4, 6, 3, bias=False)
    assert no_bias.bias is None
    assert sum(p.numel() for p in no_bias.parameters()) == 16 * 4 * 2 * 9


def test_locally_connected_rejects_a_window_larger_than_the_input() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        LocallyConnected2d(1, 1, 3, 5)


@pytest.mark.parametrize("scheme", ["xavier", "kaiming"])
def test_locally_connected_layer_starts_at_the_convolutions_scale(scheme: str) -> None:
    # Each position's filter bank has the convolution's fans; counted over the whole 3-D weight
    # they made xavier's scale ~10x too small and the local LeNet did not learn at all.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), LocallyConnected2d(1, 6, 28, 5, padding=2))
    init_weights(net, scheme)
    conv_std, local_std = net[0].weight.std().item(), net[1].weight.std().item()
    assert local_std == pytest.approx(conv_std, rel=0.1)
    assert net[1].weight[0].std().item() == pytest.approx(conv_std, rel=0.25)
    assert not net[1].bias.any()
