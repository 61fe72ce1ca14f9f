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
- ``residual``: ``false`` removes every shortcut, the identities and the 1x1 projections alike,
  and leaves everything else as it is: the "plain" networks of He et al. (2016), Fig. 3 (middle)
  and Fig. 4, the same stacked conv -> BN -> ReLU layers without ``+ X``. In the paper plain-34
  trains to a higher training error than plain-18 although it could copy it and add identity
  layers (the "degradation problem"), while ResNet-34 trains better than ResNet-18: depth alone
  does not help, the shortcuts make it usable.

ResNet exercise I, how the Inception block relates to the residual block, is ``MultiPath`` at the
end of this file: GoogLeNet's Inception block with paths removed until one is left beside an
identity path, and ``MultiPathNet``, a small net of such blocks for 28-32 px images.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.googlenet import INCEPTION_CHANNELS
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
    """What the two block types share: conv/BN pairs named ``conv{i}``/``bn{i}`` and a shortcut
    (``None`` in a plain block, ``residual=False``)."""

    expansion = 1

    def __init__(self, preact: bool, residual: bool) -> None:
        super().__init__()
        self.preact = preact
        self.residual = residual
        self.shortcut: nn.Module | None = None

    def _add_conv(self, i: int, in_channels: int, out_channels: int, k: int, stride: int) -> None:
        # Registered in the order the data meets them, so printing a block reads its flow.
        conv = _conv(in_channels, out_channels, k, stride)
        if self.preact:  # BN -> ReLU -> conv: BN normalises the conv's input
            self.add_module(f"bn{i}", nn.BatchNorm2d(in_channels))
            self.add_module(f"conv{i}", conv)
        else:  # conv -> BN -> ReLU: BN normalises the conv's output
            self.add_module(f"conv{i}", conv)
            self.add_module(f"bn{i}", nn.BatchNorm2d(out_channels))

    def _add_shortcut(self, in_channels: int, out_channels: int, stride: int) -> None:
        # A plain block has no shortcut module at all, so its parameters are exactly the
        # residual block's minus the projection's, and printing it shows no shortcut.
        if self.residual:
            self.shortcut = _shortcut(in_channels, out_channels, stride, self.preact)

    def _shortcut_path(self, x: torch.Tensor, activated: torch.Tensor) -> torch.Tensor:
        # A pre-activated projection shares the block's first BN-ReLU with the residual path;
        # the identity passes the raw input on, untouched by any nonlinearity.
        if isinstance(self.shortcut, nn.Identity):
            return x
        return self.shortcut(activated if self.preact else x)


class Residual(_Block):
    """The basic block of ResNet-18/34: two 3x3 convolutions (the first one strided).

    ``residual=False`` is the plain block of the paper's plain nets: the same two layers, no
    ``+ X``.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        preact: bool = False,
        residual: bool = True,
    ) -> None:
        super().__init__(preact, residual)
        self._add_conv(1, in_channels, channels, 3, stride)
        self._add_conv(2, channels, channels, 3, 1)
        self._add_shortcut(in_channels, channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            a = F.relu(self.bn1(x))
            y = self.conv2(F.relu(self.bn2(self.conv1(a))))
            if self.residual:
                y = y + self._shortcut_path(x, a)
            return y
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.residual:
            y = y + self._shortcut_path(x, x)
        return F.relu(y)


class Bottleneck(_Block):
    """The block of ResNet-50/101/152: 1x1 reduce -> 3x3 (strided) -> 1x1 expand to 4x.

    ``residual=False``: the same three layers without ``+ X`` (a plain bottleneck).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        preact: bool = False,
        residual: bool = True,
    ) -> None:
        super().__init__(preact, residual)
        out_channels = channels * self.expansion
        self._add_conv(1, in_channels, channels, 1, 1)
        self._add_conv(2, channels, channels, 3, stride)
        self._add_conv(3, channels, out_channels, 1, 1)
        self._add_shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            a = F.relu(self.bn1(x))
            y = self.conv1(a)
            y = self.conv2(F.relu(self.bn2(y)))
            y = self.conv3(F.relu(self.bn3(y)))
            if self.residual:
                y = y + self._shortcut_path(x, a)
            return y
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        if self.residual:
            y = y + self._shortcut_path(x, x)
        return F.relu(y)


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
    are ResNet-18, the lecture's net. ``residual=False`` gives the plain net of the same depth.
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
        residual: bool = True,
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
                blocks.append(
                    block(channels, stage_width, stride if j == 0 else 1, preact, residual)
                )
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


# --- ResNet exercise I: from the Inception block to the residual block ------------------------
# The Inception block's four paths, in GoogLeNet's order. Their widths follow block 3a of the
# paper's table (googlenet.INCEPTION_CHANNELS): outputs 64 : 128 : 32 : 32, and 1x1 "reduce"
# convs of 96/128 and 16/32 of the output in front of the 3x3 and the 5x5 conv.
INCEPTION_PATHS: tuple[str, ...] = ("1x1", "3x3", "5x5", "pool")
_C1, (_R3, _C3), (_R5, _C5), _C4 = INCEPTION_CHANNELS["3a"]
_PATH_SHARE = {"1x1": _C1, "3x3": _C3, "5x5": _C5, "pool": _C4}
_REDUCE = {"3x3": (_R3, _C3), "5x5": (_R5, _C5)}


def path_widths(channels: int, paths: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``{path: (reduce width, output width)}`` of the kept ``paths`` in a ``channels``-wide block.

    The kept paths share the block's width in block 3a's proportions, so the output is always
    ``channels`` wide and ``X`` can be added to it: with all four paths and 256 channels the
    widths are 3a's own; a path left alone gets every channel. The reduce width is 0 for the two
    paths without one (1x1, pool).
    """
    unknown = [p for p in paths if p not in INCEPTION_PATHS]
    if unknown or not paths or len(set(paths)) != len(paths):
        raise ValueError(
            f"MultiPath: paths is a non-empty list of distinct paths of the Inception block "
            f"({', '.join(INCEPTION_PATHS)}); got {list(paths)!r}"
        )
    kept = [p for p in INCEPTION_PATHS if p in paths]  # GoogLeNet's order, whatever was given
    total = sum(_PATH_SHARE[p] for p in kept)
    out = {p: channels * _PATH_SHARE[p] // total for p in kept}
    out[kept[-1]] += channels - sum(out.values())  # the rounding remainder
    widths = {}
    for p in kept:
        reduce, of = _REDUCE.get(p, (0, 1))
        widths[p] = (max(1, out[p] * reduce // of) if reduce else 0, out[p])
    if min(o for _, o in widths.values()) < 1:
        raise ValueError(f"MultiPath: {channels} channels are too few to split among {kept}")
    return widths


def _conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, batch_norm: bool
) -> list[nn.Module]:
    # With BN the conv's bias is redundant (BN's shift replaces it); without, the conv keeps it,
    # as in GoogLeNet.
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not batch_norm
    )
    return [conv, nn.BatchNorm2d(out_channels)] if batch_norm else [conv]


class MultiPath(nn.Module):
    """From the Inception block to the residual block: parallel paths, with or without ``X``.

        Inception block (GoogLeNet):   Y = ReLU(concat(f_1x1(X), f_3x3(X), f_5x5(X), f_pool(X)))
        remove paths until one is left: Y = ReLU(f_3x3(X))            a plain block
        add an identity path beside it: Y = ReLU(f_3x3(X) + X)        the residual block

    The paths are the Inception block's: ``1x1`` (1x1 conv), ``3x3`` (1x1 reduce -> 3x3),
    ``5x5`` (1x1 reduce -> 5x5) and ``pool`` (3x3 max-pool -> 1x1); ``paths`` says which are
    kept, ``path_widths`` how wide they are. Each path ends with its last conv (and BN) and the
    block applies one ReLU after merging: without the identity that is GoogLeNet's Inception
    block exactly (ReLU is elementwise, so ReLU(concat) = concat of ReLUs, and every branch of
    ``googlenet.Inception`` ends with a ReLU); with it, it is ResNet's rule, ReLU after the
    addition. The identity path is ``X`` itself: no parameters, no FLOPs but one addition.

    Two differences are all that separate the two blocks: the number of conv paths (four
    against one) and how paths merge (concatenated side by side against added to ``X``). With
    several paths and the identity the block is an Inception-ResNet block without its 1x1
    projection (``googlenet.Inception(residual=True)`` has one). The one kept path is
    Inception's 3x3 path, 1x1 -> 3x3; ResNet's basic block has 3x3 -> 3x3 on that path and its
    bottleneck 1x1 -> 3x3 -> 1x1: the contents of the path differ, the structure is the same.
    """

    def __init__(
        self,
        channels: int,
        paths: Sequence[str] = INCEPTION_PATHS,
        identity: bool = False,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        bn = batch_norm
        self.identity = identity
        self.paths = nn.ModuleDict()
        for name, (reduce, out) in path_widths(channels, paths).items():
            if name == "1x1":
                layers = _conv_bn(channels, out, 1, bn)
            elif name == "pool":
                layers = [nn.MaxPool2d(3, stride=1, padding=1), *_conv_bn(channels, out, 1, bn)]
            else:  # a 1x1 reduce in front of the wide kernel, as in GoogLeNet
                k = 3 if name == "3x3" else 5
                layers = [*_conv_bn(channels, reduce, 1, bn), nn.ReLU(inplace=True)]
                layers += _conv_bn(reduce, out, k, bn)
            self.paths[name] = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([path(x) for path in self.paths.values()], dim=1)
        if self.identity:
            y = y + x
        return F.relu(y)


class MultiPathNet(nn.Module):
    """A small net of ``MultiPath`` blocks for 28-32 px images: the ResNet I experiment.

        stem:   3x3 conv, ``width`` -> (BN) -> ReLU -> 3x3/2 max-pool        28 px -> 14
        stages: ``layers[i]`` blocks each, a 3x3/2 max-pool between stages (as between
                GoogLeNet's Inception stages)                           14, 7, 4
        head:   global average pooling -> FC classes

    Every block is ``width`` channels wide in and out, so each can add its input and the
    variants differ only inside their blocks: ``paths`` and ``identity`` are passed to every
    block (see ``MultiPath``). ``batch_norm`` puts BN after every conv, as in ResNet and
    BN-Inception, so that the paths and the identity decide how well a variant trains, not its
    normalisation. With one path and the identity, the default three stages of three blocks
    have 20 weight layers (stem, 2 per block, FC), as the CIFAR ResNet-20 of He et al. (2016).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        paths: Sequence[str] = INCEPTION_PATHS,
        identity: bool = False,
        layers: Sequence[int] = (3, 3, 3),
        width: int = 64,
        batch_norm: bool = True,
        init: str = "xavier",
    ) -> None:
        super().__init__()
        if not layers or any(int(n) < 1 for n in layers):
            raise ValueError(
                f"MultiPathNet: layers gives the number of blocks per stage, each >= 1; "
                f"got {layers!r}"
            )
        paths = list(paths)
        self.stem = nn.Sequential(
            *_conv_bn(in_channels, width, 3, batch_norm),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages: list[nn.Module] = []
        for i, num_blocks in enumerate(layers):
            blocks: list[nn.Module] = [nn.MaxPool2d(3, stride=2, padding=1)] if i else []
            blocks += [
                MultiPath(width, paths, identity, batch_norm) for _ in range(int(num_blocks))
            ]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(width, num_classes)
            )
        )
        init_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))
