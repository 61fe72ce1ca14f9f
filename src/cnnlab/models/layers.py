"""Small reusable blocks shared by the model families.

The factories turn the string knobs of the configs (``activation: relu``, ``pool: max``) into
modules, so every family accepts the same names and an unknown name fails the same clear way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}

POOLS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def _choose(kind: str, name: str, table: dict) -> type[nn.Module]:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; choose one of: {', '.join(table)}")
    return table[name]


def make_activation(name: str) -> nn.Module:
    """An activation module by name: sigmoid, tanh, relu, leaky_relu or gelu."""
    return _choose("activation", name, ACTIVATIONS)()


def make_pool(
    name: str, kernel_size: int = 2, stride: int | None = None, padding: int = 0
) -> nn.Module:
    """A max or average pooling module by name."""
    return _choose("pool", name, POOLS)(kernel_size, stride=stride, padding=padding)


def dense_head(
    in_features: int,
    hidden_widths: Sequence[int],
    num_classes: int,
    activation: str,
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> list[nn.Module]:
    """Flatten, then FC -> [BN] -> activation -> [dropout] per hidden width, then FC to the
    classes: the classifier of LeNet and AlexNet."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for hidden in hidden_widths:
        layers.append(nn.Linear(width, hidden))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(make_activation(activation))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return layers


def init_weights(module: nn.Module, scheme: str) -> None:
    """Initialise conv and linear weights: ``xavier`` (the lecture's LeNet), ``kaiming`` (ReLU
    nets) or ``default`` (PyTorch's own). Biases start at zero for the first two."""
    if scheme == "default":
        return
    init = {"xavier": nn.init.xavier_uniform_, "kaiming": nn.init.kaiming_normal_}
    fn = _choose("init", scheme, init)
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear | LocallyConnected2d):
            # A locally connected layer's 3-D weight would count every position into its fans
            # (xavier: ~10x too small a scale for LeNet's first layer, which then does not
            # learn): each position's filter bank is initialised as the convolution's weight.
            banks = m.conv_shaped_banks() if isinstance(m, LocallyConnected2d) else [m.weight]
            for weight in banks:
                if scheme == "kaiming":
                    fn(weight, nonlinearity="relu")
                else:
                    fn(weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """Spatial size after a convolution or pooling window (floor mode, as PyTorch computes it)."""
    return (size + 2 * padding - kernel_size) // stride + 1


class LocallyConnected2d(nn.Module):
    """The lecture's locally connected layer: a convolution whose weights are *not* shared.

    Every output position (i, j) has its own filter bank, so the layer has
    ``out_h * out_w`` times the parameters of the convolution with the same window. It needs
    the input size up front because the number of filters depends on it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_size: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.output_size = conv_output_size(input_size, kernel_size, stride, padding)
        if self.output_size < 1:
            raise ValueError(
                f"LocallyConnected2d: a {kernel_size}x{kernel_size} window does not fit a "
                f"{input_size}x{input_size} input (padding {padding})"
            )
        positions = self.output_size**2
        # One (out_channels x in_channels*k*k) filter matrix per output position.
        self.weight = nn.Parameter(
            torch.empty(positions, out_channels, in_channels * kernel_size**2)
        )
        self.bias = (
            nn.Parameter(torch.empty(out_channels, self.output_size, self.output_size))
            if bias
            else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same scale as nn.Conv2d's default: uniform in +-1/sqrt(fan_in).
        bound = 1 / math.sqrt(self.weight.shape[-1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def conv_shaped_banks(self) -> list[torch.Tensor]:
        """One view per output position of its filter bank, shaped as the convolution's weight
        (out_channels, in_channels, k, k), so that an init scheme sees the convolution's fans."""
        positions, out_channels, fan_in = self.weight.shape
        k = self.kernel_size
        shaped = self.weight.detach().view(positions, out_channels, fan_in // k**2, k, k)
        return list(shaped.unbind(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)
        out = torch.einsum("nkl,lok->nol", patches, self.weight)
        out = out.reshape(x.shape[0], -1, self.output_size, self.output_size)
        return out if self.bias is None else out + self.bias


# The convolution-like layers (shared weights or not) that analysis and visualisation look for.
CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, LocallyConnected2d)


class _LocalResponseNorm(nn.Module):
    """Shared body of the two LRN kinds: ``b = a / (k + alpha * S)^beta`` where ``S`` is the sum
    of squared activations over a window around ``a``; subclasses say where the window lies.

    Window convention, both kinds: the half-width is ``r = size // 2`` and the window runs from
    ``-r`` to ``+r`` around the centre, clipped at the border (zero padding), exactly as the
    AlexNet paper writes the bounds ``max(0, i - n/2) .. min(N - 1, i + n/2)``. For odd ``size``
    that is ``size`` elements; for even ``size`` it is ``size + 1`` (the paper's formula read
    literally, which is what the lecture's ``n = 2`` toy example uses: one neighbour each side).
    ``alpha`` multiplies the plain *sum* (the paper's convention), not the mean.
    """

    def __init__(self, size: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75):
        super().__init__()
        name = type(self).__name__
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"{name}: size (the paper's n) must be an integer >= 1, got {size!r}")
        if k < 0 or alpha < 0 or beta < 0:
            raise ValueError(
                f"{name}: k, alpha and beta must be >= 0, got k={k}, alpha={alpha}, beta={beta}"
            )
        self.size, self.k, self.alpha, self.beta = size, float(k), float(alpha), float(beta)
        self.radius = size // 2
        self.window = 2 * self.radius + 1

    def extra_repr(self) -> str:
        return f"size={self.size}, k={self.k}, alpha={self.alpha}, beta={self.beta}"

    def _window_mean_of_squares(self, squares: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _window_elements(self) -> int:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects (N, C, H, W) input, got {x.dim()}-D")
        # Squares and powers lose too much in bf16/fp16 (autocast): use float32 there.
        low_precision = x.dtype in (torch.float16, torch.bfloat16)
        mean = self._window_mean_of_squares((x.float() if low_precision else x).square())
        # avg_pool with count_include_pad gives sum / window; the paper's alpha multiplies the sum.
        denominator = (self.k + (self.alpha * self._window_elements()) * mean).pow(self.beta)
        return x / denominator.to(x.dtype)


class InterChannelLRN(_LocalResponseNorm):
    """Inter-channel local response normalisation (AlexNet, section 3.3):

        b^i_{x,y} = a^i_{x,y} / (k + alpha * sum_j (a^j_{x,y})^2)^beta,
        j = max(0, i - n/2) .. min(N - 1, i + n/2)

    with ``n = size`` neighbouring kernel maps at the same position (see the base class for even
    ``n``). The paper's constants are the defaults: n=5, k=2, alpha=1e-4, beta=0.75.

    Relation to ``torch.nn.LocalResponseNorm``, which divides alpha by the window and, for even
    sizes, uses the asymmetric window ``i - n//2 .. i + (n-1)//2``:

        InterChannelLRN(n, k, alpha, beta)
            == nn.LocalResponseNorm(size=n, alpha=alpha * n, beta=beta, k=k)          for odd n
            == nn.LocalResponseNorm(size=n + 1, alpha=alpha * (n + 1), beta=beta, k=k) for even n
    """

    def _window_elements(self) -> int:
        return self.window

    def _window_mean_of_squares(self, squares: torch.Tensor) -> torch.Tensor:
        b, c, h, w = squares.shape
        if squares.is_contiguous(memory_format=torch.channels_last) and not squares.is_contiguous():
            # channels_last (NHWC): each position's channels already lie side by side, so pool
            # them as rows of a 1-D signal; no copy to NCHW and back, and the result keeps the
            # layout of x for the division in forward.
            rows = squares.permute(0, 2, 3, 1).reshape(b * h * w, 1, c)
            mean = F.avg_pool1d(
                rows, self.window, stride=1, padding=self.radius, count_include_pad=True
            )
            return mean.reshape(b, h, w, c).permute(0, 3, 1, 2)
        # Channels become the pooled "height" of a one-channel image; positions are independent.
        stacked = squares.reshape(b, 1, c, h * w)
        mean = F.avg_pool2d(
            stacked, (self.window, 1), stride=1, padding=(self.radius, 0), count_include_pad=True
        )
        return mean.reshape(b, c, h, w)


class IntraChannelLRN(_LocalResponseNorm):
    """Intra-channel local response normalisation: the same formula as :class:`InterChannelLRN`,
    but the sum runs over the spatial neighbourhood of (x, y) *within* channel i,

        b^i_{x,y} = a^i_{x,y} / (k + alpha * sum_{(u,v) in window(x,y)} (a^i_{u,v})^2)^beta

    a square of ``size x size`` positions (``size + 1`` a side for even ``size``, see the base
    class), zero padded at the border. This is Caffe's ``WITHIN_CHANNEL`` mode with the paper's
    alpha convention (Caffe divides alpha by the window's element count).
    """

    def _window_elements(self) -> int:
        return self.window**2

    def _window_mean_of_squares(self, squares: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(
            squares, self.window, stride=1, padding=self.radius, count_include_pad=True
        )


LRN_KINDS: dict[str, type[nn.Module] | None] = {
    "none": None,
    "inter": InterChannelLRN,
    "intra": IntraChannelLRN,
}


def make_lrn(
    name: str, size: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75
) -> nn.Module | None:
    """A local response normalisation layer by name: ``inter`` (across channels, the AlexNet
    paper), ``intra`` (across a spatial window within each channel) or ``none`` (returns None)."""
    cls = _choose("lrn", name, LRN_KINDS)
    return None if cls is None else cls(size, k=k, alpha=alpha, beta=beta)
