"""VGG as in the lecture (d2l "Networks Using Blocks"), with the paper's configurations.

A VGG is a stack of five ``vgg_block``s -- each a few 3x3 convolutions (padding 1, so the size is
kept) followed by a 2x2 max-pool that halves the size -- and then three fully connected layers:

    features:   vgg_block x 5           224 -> 112 -> 56 -> 28 -> 14 -> 7
    classifier: flatten (512*7*7) -> FC 4096 -> ReLU -> dropout
                                  -> FC 4096 -> ReLU -> dropout -> FC classes

Which VGG it is depends only on ``(num_convs, out_channels)`` per block: ``VGG_CONFIGS`` is
Table 1 of Simonyan & Zisserman (2015), columns A (VGG-11), B (13), D (16) and E (19).
The lecture trains VGG-11 with every conv width divided by 4 (``width_ratio=4``) so that it fits
Fashion-MNIST on a laptop; the dense layers stay 4096 wide.

With 3 channels, 1000 classes and 224 px the nets have exactly torchvision's parameters (the
``_bn`` forms keep the conv bias, as torchvision does). torchvision adds an adaptive 7x7 average
pool before the classifier; at 224 px that pool is the identity, so we compute the flatten width
from ``input_size`` instead and any input of at least 32 px works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.models.layers import init_weights

# Table 1 of the paper: (number of 3x3 convs, output channels) for each of the five blocks.
VGG_CONFIGS: dict[str, tuple[tuple[int, int], ...]] = {
    "vgg11": ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)),  # A
    "vgg13": ((2, 64), (2, 128), (2, 256), (2, 512), (2, 512)),  # B
    "vgg16": ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)),  # D
    "vgg19": ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512)),  # E
}


def vgg_block(
    num_convs: int, in_channels: int, out_channels: int, *, batch_norm: bool = False
) -> nn.Sequential:
    """``num_convs`` 3x3 convolutions (padding 1) with ReLU, then a 2x2 max-pool of stride 2.

    ``batch_norm`` puts a BatchNorm between each convolution and its ReLU (torchvision's
    ``vgg*_bn``; the original VGG predates batch normalisation).
    """
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def _resolve_arch(arch: str | Sequence[Sequence[int]]) -> tuple[tuple[int, int], ...]:
    if isinstance(arch, str):
        if arch not in VGG_CONFIGS:
            raise ValueError(
                f"VGG: unknown arch {arch!r}; choose one of {', '.join(VGG_CONFIGS)} "
                f"or give a tuple of (num_convs, out_channels) pairs"
            )
        return VGG_CONFIGS[arch]
    blocks = tuple(tuple(int(v) for v in pair) for pair in arch)
    if not blocks or any(len(p) != 2 or p[0] < 1 or p[1] < 1 for p in blocks):
        raise ValueError(
            f"VGG: arch must be a non-empty sequence of (num_convs, out_channels) pairs of "
            f"positive integers, got {arch!r}"
        )
    return blocks  # type: ignore[return-value]


class VGG(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        arch: str | Sequence[Sequence[int]] = "vgg11",
        batch_norm: bool = False,
        width_ratio: int = 1,
        input_size: int = 224,
        dropout: float = 0.5,
        fc_width: int = 4096,
        init: str = "xavier",
    ) -> None:
        super().__init__()
        blocks = _resolve_arch(arch)
        if width_ratio < 1:
            raise ValueError(
                f"VGG: width_ratio divides the conv widths and must be >= 1; got {width_ratio}"
            )
        if min(c for _, c in blocks) // width_ratio < 1:
            raise ValueError(
                f"VGG: width_ratio {width_ratio} leaves a block with no channels "
                f"(narrowest block has {min(c for _, c in blocks)})"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"VGG: dropout is a probability in [0, 1), got {dropout}")
        # Every block halves the size (floor), so the last map is input_size // 2**blocks.
        min_size = 2 ** len(blocks)
        if input_size < min_size:
            raise ValueError(
                f"VGG: {len(blocks)} blocks halve the image {len(blocks)} times, so input_size "
                f"must be at least {min_size}; got {input_size}. Set dataset.image_size >= "
                f"{min_size}."
            )

        conv_blocks = []
        channels = in_channels
        for num_convs, out_channels in blocks:
            out_channels //= width_ratio
            conv_blocks.append(vgg_block(num_convs, channels, out_channels, batch_norm=batch_norm))
            channels = out_channels
        self.features = nn.Sequential(*conv_blocks)

        final_size = input_size // min_size
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * final_size * final_size, fc_width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc_width, fc_width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc_width, num_classes),
        )
        init_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def vgg11(**kwargs) -> VGG:
    """VGG-11 (configuration A), the lecture's net."""
    return VGG(arch="vgg11", **kwargs)


def vgg13(**kwargs) -> VGG:
    """VGG-13 (configuration B)."""
    return VGG(arch="vgg13", **kwargs)


def vgg16(**kwargs) -> VGG:
    """VGG-16 (configuration D)."""
    return VGG(arch="vgg16", **kwargs)


def vgg19(**kwargs) -> VGG:
    """VGG-19 (configuration E)."""
    return VGG(arch="vgg19", **kwargs)


def vgg11_bn(**kwargs) -> VGG:
    """VGG-11 with batch normalisation after every convolution."""
    return VGG(arch="vgg11", batch_norm=True, **kwargs)


def vgg13_bn(**kwargs) -> VGG:
    """VGG-13 with batch normalisation after every convolution."""
    return VGG(arch="vgg13", batch_norm=True, **kwargs)


def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 with batch normalisation after every convolution."""
    return VGG(arch="vgg16", batch_norm=True, **kwargs)


def vgg19_bn(**kwargs) -> VGG:
    """VGG-19 with batch normalisation after every convolution."""
    return VGG(arch="vgg19", batch_norm=True, **kwargs)
