"""ResNet as in the lecture (d2l "Residual Networks") and He et al. (2016), Table 1.

    stem:    7x7 conv, 64, stride 2 -> BN -> ReLU -> 3x3 max-pool, stride 2     224 -> 56
    stage 1: blocks at  64 channels (conv2_x), stride 1                           56
    stage 2: blocks at 128 channels (conv3_x), first block stride 2               28
    stage 3: blocks at 256 channels (conv4_x), first block stride 2               14
    stage 4: blocks at 512 channels (conv5_x), first block stride 2                7
    head:    global average pooling -> FC classes

A depth is a block type and a number of blocks per stage: ``RESNET_TABLE`` is the paper's Table 1.
``Residual`` is the basic block of ResNet-18/34 (two 3x3 convolutions); ``Bottleneck`` is the
1x1 -> 3x3 -> 1x1 block of ResNet-50/101/152 whose output is 4x wider than its 3x3 convolution.
Where a block changes the shape (stride 2 or more channels), the shortcut is a 1x1 convolution
with BN (the paper's option B; without BN when pre-activated); everywhere else the identity.

Configured ImageNet-style (3 channels, 1000 classes) the nets equal torchvision's: convolutions
followed by BN carry no bias (BN's shift makes it redundant), and the bottleneck strides in its
3x3 convolution, not the first 1x1 ("ResNet v1.5": the 1x1 would otherwise skip 3/4 of the
pixels). The lecture's code differs in two details that only change the parameter count: its
convolutions keep their bias and its 1x1 shortcut has no BN. Knobs:

- ``preact``: the pre-activation unit of He et al. (2016b), "Identity Mappings in Deep Residual
  Networks": BN -> ReLU -> conv inside each block and nothing after the addition, so between
  projections the shortcut path is a pure identity; the net ends with BN -> ReLU before pooling.
- ``stem``: ``imagenet`` (above) or ``small`` (3x3 conv stride 1 + BN + ReLU, no pooling), the
  CIFAR-style stem that keeps a 28 or 32 px image from being cut to 7 or 8 px at once.
- ``width``: channels of the first stage (64); stages double it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.layers import init_weights


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    # No bias: every conv feeds a BatchNorm (directly or, pre-activated, through the sum).
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
    )


def _shortcut(in_channels: int, out_channels: int, stride: int, preact: bool) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if preact:  # the input is already BN-ReLU'd, and the next unit normalises the sum
        return _conv(in_channels, out_channels, 1, stride)
    return nn.Sequential(_conv(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))


class _Block(nn.Module):
    """What the two block types share: conv/BN pairs named ``conv{i}``/``bn{i}`` and a shortcut."""

    expansion = 1

    def __init__(self, preact: bool) -> None:
        super().__init__()
        self.preact = preact

    def _add_conv(self, i: int, in_channels: int, out_channels: int, k: int, stride: int) -> None:
        # Registered in the order the data meets them, so printing a block reads its flow.
        conv = _conv(in_channels, out_channels, k, stride)
        if self.preact:  # BN -> ReLU -> conv: BN normalises the conv's input
            self.add_module(f"bn{i}", nn.BatchNorm2d(in_channels))
            self.add_module(f"conv{i}", conv)
        else:  # conv -> BN -> ReLU: BN normalises the conv's output
            self.add_module(f"conv{i}", conv)
            self.add_module(f"bn{i}", nn.BatchNorm2d(out_channels))

    def _shortcut_path(self, x: torch.Tensor, activated: torch.Tensor) -> torch.Tensor:
        # A pre-activated projection shares the block's first BN-ReLU with the residual path;
        # the identity passes the raw input on, untouched by any nonlinearity.
        if isinstance(self.shortcut, nn.Identity):
            return x
        return self.shortcut(activated if self.preact else x)


class Residual(_Block):
    """The basic block of ResNet-18/34: two 3x3 convolutions (the first one strided)."""

    expansion = 1

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, preact: bool = False
    ) -> None:
        super().__init__(preact)
        self._add_conv(1, in_channels, channels, 3, stride)
        self._add_conv(2, channels, channels, 3, 1)
        self.shortcut = _shortcut(in_channels, channels, stride, preact)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            a = F.relu(self.bn1(x))
            y = self.conv2(F.relu(self.bn2(self.conv1(a))))
            return y + self._shortcut_path(x, a)
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self._shortcut_path(x, x))


class Bottleneck(_Block):
    """The block of ResNet-50/101/152: 1x1 reduce -> 3x3 (strided) -> 1x1 expand to 4x."""

    expansion = 4

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, preact: bool = False
    ) -> None:
        super().__init__(preact)
        out_channels = channels * self.expansion
        self._add_conv(1, in_channels, channels, 1, 1)
        self._add_conv(2, channels, channels, 3, stride)
        self._add_conv(3, channels, out_channels, 1, 1)
        self.shortcut = _shortcut(in_channels, out_channels, stride, preact)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            a = F.relu(self.bn1(x))
            y = self.conv1(a)
            y = self.conv2(F.relu(self.bn2(y)))
            y = self.conv3(F.relu(self.bn3(y)))
            return y + self._shortcut_path(x, a)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + self._shortcut_path(x, x))


BLOCKS: dict[str, type[_Block]] = {"basic": Residual, "bottleneck": Bottleneck}

# He et al. (2016), Table 1: block type and number of blocks in conv2_x .. conv5_x.
RESNET_TABLE: dict[int, tuple[type[_Block], tuple[int, int, int, int]]] = {
    18: (Residual, (2, 2, 2, 2)),
    34: (Residual, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}

STEMS = ("imagenet", "small")


class ResNet(nn.Module):
    """A ResNet from a block type and the number of blocks per stage (a row of Table 1).

    ``block`` is ``"basic"`` / ``Residual`` or ``"bottleneck"`` / ``Bottleneck``; the defaults
    are ResNet-18, the lecture's net.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        block: str | type[_Block] = "basic",
        layers: Sequence[int] = (2, 2, 2, 2),
        preact: bool = False,
        stem: str = "imagenet",
        width: int = 64,
        init: str = "xavier",
    ) -> None:
        super().__init__()
        if isinstance(block, str):
            if block not in BLOCKS:
                raise ValueError(
                    f"ResNet: unknown block {block!r}; choose one of: {', '.join(BLOCKS)}"
                )
            block = BLOCKS[block]
        if not layers or any(int(n) < 1 for n in layers):
            raise ValueError(
                f"ResNet: layers gives the number of blocks per stage, each >= 1; got {layers!r}"
            )
        if stem not in STEMS:
            raise ValueError(f"ResNet: unknown stem {stem!r}; choose one of: {', '.join(STEMS)}")
        if width < 1:
            raise ValueError(f"ResNet: width is the first stage's channel count; got {width}")

        # In the pre-activation net the stem is the bare convolution: the first block's own
        # BN-ReLU activates it (He et al. 2016b, "right after conv1").
        if stem == "imagenet":
            stem_layers: list[tuple[str, nn.Module]] = [
                ("conv", _conv(in_channels, width, 7, stride=2))
            ]
            if not preact:
                stem_layers += [("bn", nn.BatchNorm2d(width)), ("relu", nn.ReLU(inplace=True))]
            stem_layers.append(("pool", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)))
        else:
            stem_layers = [("conv", _conv(in_channels, width, 3))]
            if not preact:
                stem_layers += [("bn", nn.BatchNorm2d(width)), ("relu", nn.ReLU(inplace=True))]
        self.stem = nn.Sequential(OrderedDict(stem_layers))

        stages = []
        channels = width
        for i, num_blocks in enumerate(layers):
            stage_width = width * 2**i
            # The first stage follows the stem's pooling, so only later stages downsample.
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(int(num_blocks)):
                blocks.append(block(channels, stage_width, stride if j == 0 else 1, preact))
                channels = stage_width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)

        head: list[tuple[str, nn.Module]] = []
        if preact:  # the last sum is un-normalised: activate it once before pooling
            head += [("bn", nn.BatchNorm2d(channels)), ("relu", nn.ReLU(inplace=True))]
        head += [
            ("pool", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten()),
            ("fc", nn.Linear(channels, num_classes)),
        ]
        self.head = nn.Sequential(OrderedDict(head))
        init_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _from_table(depth: int, **kwargs) -> ResNet:
    block, layers = RESNET_TABLE[depth]
    return ResNet(block=block, layers=layers, **kwargs)


def resnet18(**kwargs) -> ResNet:
    """ResNet-18: basic blocks, (2, 2, 2, 2)."""
    return _from_table(18, **kwargs)


def resnet34(**kwargs) -> ResNet:
    """ResNet-34: basic blocks, (3, 4, 6, 3)."""
    return _from_table(34, **kwargs)


def resnet50(**kwargs) -> ResNet:
    """ResNet-50: bottleneck blocks, (3, 4, 6, 3)."""
    return _from_table(50, **kwargs)


def resnet101(**kwargs) -> ResNet:
    """ResNet-101: bottleneck blocks, (3, 4, 23, 3)."""
    return _from_table(101, **kwargs)


def resnet152(**kwargs) -> ResNet:
    """ResNet-152: bottleneck blocks, (3, 8, 36, 3)."""
    return _from_table(152, **kwargs)
