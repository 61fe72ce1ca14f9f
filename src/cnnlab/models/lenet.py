"""LeNet-5 as in the lecture, with the knobs of exercises I and II.

Defaults reproduce the lecture's net for 28x28 Fashion-MNIST:

    conv 6@5x5 pad 2 -> sigmoid -> avg-pool 2
    conv 16@5x5      -> sigmoid -> avg-pool 2
    flatten (16*5*5) -> FC 120 -> sigmoid -> FC 84 -> sigmoid -> FC 10

The number of conv layers follows ``conv_channels``; the number of hidden FC layers follows
``fc_widths``. ``first_layer: local`` swaps the first convolution for a locally connected layer;
``head: conv1x1_gap`` replaces the dense head with NiN-style 1x1 convolutions and global average
pooling (1x1 convolutions *are* fully connected layers applied at every position).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.models.layers import (
    LocallyConnected2d,
    conv_output_size,
    dense_head,
    init_weights,
    make_activation,
    make_pool,
)


class LeNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 28,
        conv_channels: Sequence[int] = (6, 16),
        kernel_sizes: Sequence[int] = (5, 5),
        paddings: Sequence[int] | None = (2, 0),
        fc_widths: Sequence[int] = (120, 84),
        activation: str = "sigmoid",
        pool: str = "avg",
        pool_size: int = 2,
        dropout: float = 0.0,
        batch_norm: bool = False,
        init: str = "xavier",
        first_layer: str = "conv",
        head: str = "fc",
    ) -> None:
        super().__init__()
        if len(kernel_sizes) != len(conv_channels):
            raise ValueError(
                f"LeNet: kernel_sizes {list(kernel_sizes)} needs one entry per conv layer "
                f"(conv_channels {list(conv_channels)})"
            )
        if paddings is None:  # first layer keeps the size (the lecture's pad 2), the rest shrink
            paddings = [kernel_sizes[0] // 2] + [0] * (len(kernel_sizes) - 1)
        if len(paddings) != len(conv_channels):
            raise ValueError(f"LeNet: paddings {list(paddings)} needs one entry per conv layer")
        if first_layer not in ("conv", "local"):
            raise ValueError(f"LeNet: first_layer must be 'conv' or 'local', got {first_layer!r}")
        if head not in ("fc", "conv1x1_gap"):
            raise ValueError(f"LeNet: head must be 'fc' or 'conv1x1_gap', got {head!r}")

        features: list[nn.Module] = []
        size, channels = input_size, in_channels
        for i, (out, k, p) in enumerate(zip(conv_channels, kernel_sizes, paddings, strict=True)):
            if i == 0 and first_layer == "local":
                features.append(LocallyConnected2d(channels, out, size, k, padding=p))
            else:
                features.append(nn.Conv2d(channels, out, k, padding=p))
            if batch_norm:
                features.append(nn.BatchNorm2d(out))
            features += [make_activation(activation), make_pool(pool, pool_size)]
            size = conv_output_size(conv_output_size(size, k, padding=p), pool_size, pool_size)
            channels = out
            if size < 1:
                raise ValueError(
                    f"LeNet: a {input_size}x{input_size} input shrinks to nothing after conv "
                    f"layer {i + 1}; use a larger dataset.image_size or smaller kernels"
                )
        self.features = nn.Sequential(*features)

        if head == "fc":
            head_layers = dense_head(
                channels * size * size, fc_widths, num_classes, activation, dropout, batch_norm
            )
        else:
            head_layers: list[nn.Module] = []
            for hidden in fc_widths:
                head_layers += [nn.Conv2d(channels, hidden, 1), make_activation(activation)]
                if dropout > 0:
                    head_layers.append(nn.Dropout(dropout))
                channels = hidden
            head_layers += [nn.Conv2d(channels, num_classes, 1), nn.AdaptiveAvgPool2d(1)]
            head_layers.append(nn.Flatten())
        self.classifier = nn.Sequential(*head_layers)
        init_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
