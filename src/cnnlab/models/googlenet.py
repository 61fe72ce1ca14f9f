"""GoogLeNet (Inception v1) as in the lecture, with knobs for its descendants.

Defaults reproduce the lecture's net (d2l "Multi-Branch Networks (GoogLeNet)"):

    b1  conv 64@7x7 stride 2 pad 3 -> ReLU -> max-pool 3/2 pad 1
    b2  conv 64@1x1 -> ReLU -> conv 192@3x3 pad 1 -> ReLU -> max-pool 3/2 pad 1
    b3  Inception 3a, 3b                  -> max-pool 3/2 pad 1
    b4  Inception 4a, 4b, 4c, 4d, 4e      -> max-pool 3/2 pad 1
    b5  Inception 5a, 5b -> global average pooling -> flatten
    FC  1024 -> num_classes

Every Inception block runs four branches side by side and concatenates them on channels:
(1) 1x1 conv; (2) 1x1 conv -> 3x3 conv; (3) 1x1 conv -> 5x5 conv; (4) 3x3 max-pool -> 1x1 conv.
The 1x1 convs in front of the 3x3 and 5x5 convs are the "reduce" layers that make the wide
kernels affordable. The channel widths are the paper's table, ``INCEPTION_CHANNELS`` below.

Knobs (all off by default, the lecture's net):

- ``batch_norm``: BN after every conv (Inception-v2, the "BN-Inception" of Ioffe & Szegedy).
- ``factorized``: Inception-v3 factorisation of the wide kernels inside the Inception blocks.
  The 5x5 conv becomes two stacked 3x3 convs (same 5x5 receptive field), and then every 3x3
  conv becomes a 1x3 conv followed by a 3x1 conv. So branch (2) is 1x1 -> 1x3 -> 3x1 and
  branch (3) is 1x1 -> 1x3 -> 3x1 -> 1x3 -> 3x1, with a ReLU (and BN) after each conv. Inside
  a factorised stack every conv keeps the branch's reduced width and only the last one widens
  to the branch's output (as in torchvision's Inception-v3 1x7/7x1 stacks), so with GoogLeNet's
  narrow reduce layers each stack has fewer weights than the kernel it replaces. The stem's 7x7 and
  3x3 convs are left alone.
- ``residual``: Inception-ResNet. The concatenated branches go through a linear 1x1 conv (no
  activation, no BN) to the block's output width, are scaled by ``residual_scale`` (0.2: the
  paper scales residuals by 0.1-0.3 to keep wide residual nets from dying early in training)
  and added to a shortcut: ``out = ReLU(shortcut(x) + scale * proj(concat(branches)))``. The
  shortcut is the identity where the block keeps its width (4b, 4c, 5a) and a 1x1 conv (+ BN
  with ``batch_norm``) where it widens, as in ResNet's projection shortcuts; the table's widths,
  and so the rest of the network, stay the same.
- ``aux_logits``: the paper's auxiliary classifiers ("auxiliary learners") after Inception 4a
  and 4d, used in training only. See ``AuxClassifier`` and ``GoogLeNet.forward``.
- ``dropout``: dropout before the final FC layer (the lecture has none; the paper uses 0.4).
- ``init``: weight initialisation of conv and FC layers (the lecture's d2l code uses Xavier).
- ``width_ratio``: divides the width of every conv (stem and table; at least 1 channel each), as
  VGG's ``width_ratio`` narrows the course's VGG-11; 4 gives about 1/16 of the FLOPs. The laptop
  scale of the GoogLeNet items uses it (docs/ANSWERS.md, "Laptop scale").

Input size: the stem and the four max-pools each map a side n to ceil(n/2), so the last feature
map is ceil(n/32) wide and never vanishes: any input of at least 1x1 runs (measured in
``tests/test_models_googlenet.py::test_minimum_input_size``). Below 32 px the last stages see a
1x1 map made mostly of padding; 96 px (the course size) gives 3x3, 224 px gives 7x7.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.models.layers import init_weights

# The paper's Table 1 ("GoogLeNet incarnation of the Inception architecture"), one row per block:
#   name: (#1x1, (#3x3 reduce, #3x3), (#5x5 reduce, #5x5), pool proj)
# A block's output width is #1x1 + #3x3 + #5x5 + pool proj; it is the next block's input width.
INCEPTION_CHANNELS: dict[str, tuple[int, tuple[int, int], tuple[int, int], int]] = {
    "3a": (64, (96, 128), (16, 32), 32),  # 192 -> 256
    "3b": (128, (128, 192), (32, 96), 64),  # 256 -> 480
    "4a": (192, (96, 208), (16, 48), 64),  # 480 -> 512
    "4b": (160, (112, 224), (24, 64), 64),  # 512 -> 512
    "4c": (128, (128, 256), (24, 64), 64),  # 512 -> 512
    "4d": (112, (144, 288), (32, 64), 64),  # 512 -> 528
    "4e": (256, (160, 320), (32, 128), 128),  # 528 -> 832
    "5a": (256, (160, 320), (32, 128), 128),  # 832 -> 832
    "5b": (384, (192, 384), (48, 128), 128),  # 832 -> 1024
}
# Which blocks sit between which max-pools (b3, b4, b5 of the lecture).
STAGES: dict[str, tuple[str, ...]] = {
    "b3": ("3a", "3b"),
    "b4": ("4a", "4b", "4c", "4d", "4e"),
    "b5": ("5a", "5b"),
}
# The auxiliary classifiers hang off these blocks' outputs (paper, section 5).
AUX_AFTER: tuple[str, ...] = ("4a", "4d")
AUX_DROPOUT = 0.7  # the paper's rate for the auxiliary heads
STEM_CHANNELS = 192  # width after b1 and b2, the input of Inception 3a


def conv_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """Conv -> (BN) -> ReLU, the unit every GoogLeNet conv is made of."""
    # With BN the conv bias is redundant: BN subtracts the mean and adds its own shift.
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _wide_conv(
    in_channels: int, out_channels: int, kernel_size: int, batch_norm: bool, factorized: bool
) -> list[nn.Module]:
    """The k x k conv of a branch, or its Inception-v3 factorisation (see the module docstring)."""
    if not factorized:
        return [
            conv_relu(
                in_channels,
                out_channels,
                kernel_size,
                padding=kernel_size // 2,
                batch_norm=batch_norm,
            )
        ]
    # 5x5 -> two 3x3 (18 instead of 25 weights per channel pair, same receptive field);
    # each 3x3 -> 1x3 then 3x1 (6 instead of 9).
    n_3x3 = {3: 1, 5: 2}[kernel_size]
    shapes = [((1, 3), (0, 1)), ((3, 1), (1, 0))] * n_3x3
    layers: list[nn.Module] = []
    for i, (kernel, padding) in enumerate(shapes):
        out = out_channels if i == len(shapes) - 1 else in_channels
        layers.append(conv_relu(in_channels, out, kernel, padding=padding, batch_norm=batch_norm))
    return layers


class Inception(nn.Module):
    """The Inception block: four parallel branches concatenated on the channel axis.

    ``c1`` is the width of the 1x1 branch, ``c2 = (reduce, out)`` of the 3x3 branch,
    ``c3 = (reduce, out)`` of the 5x5 branch and ``c4`` of the pool-projection branch, as in
    d2l: ``Inception(192, 64, (96, 128), (16, 32), 32)`` is block 3a. Every branch keeps the
    spatial size, so the output has ``c1 + c2[1] + c3[1] + c4`` channels at the input's size.
    """

    def __init__(
        self,
        in_channels: int,
        c1: int,
        c2: tuple[int, int],
        c3: tuple[int, int],
        c4: int,
        batch_norm: bool = False,
        factorized: bool = False,
        residual: bool = False,
        residual_scale: float = 0.2,
    ) -> None:
        super().__init__()
        bn = batch_norm
        self.branch1 = conv_relu(in_channels, c1, 1, batch_norm=bn)
        self.branch2 = nn.Sequential(
            conv_relu(in_channels, c2[0], 1, batch_norm=bn),
            *_wide_conv(c2[0], c2[1], 3, bn, factorized),
        )
        self.branch3 = nn.Sequential(
            conv_relu(in_channels, c3[0], 1, batch_norm=bn),
            *_wide_conv(c3[0], c3[1], 5, bn, factorized),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), conv_relu(in_channels, c4, 1, batch_norm=bn)
        )
        self.out_channels = c1 + c2[1] + c3[1] + c4

        self.residual = residual
        self.residual_scale = residual_scale
        if residual:
            out = self.out_channels
            # Linear on purpose: a ReLU here would make the residual non-negative, so the sum
            # could only grow; the activation comes after the addition.
            self.project = nn.Conv2d(out, out, 1)
            if in_channels == out:
                self.shortcut: nn.Module = nn.Identity()
            else:
                shortcut = [nn.Conv2d(in_channels, out, 1, bias=not bn)]
                self.shortcut = nn.Sequential(*shortcut, *([nn.BatchNorm2d(out)] if bn else []))
            self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        out = torch.cat(branches, dim=1)
        if not self.residual:
            return out
        return self.act(self.shortcut(x) + self.residual_scale * self.project(out))


class AuxClassifier(nn.Module):
    """An auxiliary classifier of the paper: a small head that injects gradient mid-network.

    The paper's head is avg-pool 5x5 stride 3 -> 1x1 conv 128 -> ReLU -> FC 1024 -> ReLU ->
    dropout 0.7 -> FC classes. Its fixed pool turns the 14x14 maps of a 224 px input into 4x4;
    here an adaptive average pool to 4x4 takes its place, so the head has the paper's shape
    (and parameter count) at any input size, e.g. from the 6x6 maps of a 96 px input.
    """

    def __init__(self, in_channels: int, num_classes: int, batch_norm: bool = False) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = conv_relu(in_channels, 128, 1, batch_norm=batch_norm)
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, 1024),
            nn.ReLU(inplace=True),
            nn.Dropout(AUX_DROPOUT),
            nn.Linear(1024, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(self.pool(x)))


class GoogLeNet(nn.Module):
    """GoogLeNet of the lecture; see the module docstring for the knobs.

    With ``aux_logits=True`` the module returns ``(logits, [aux_4a, aux_4d])`` in training mode
    and plain ``logits`` in eval mode; the training loop adds ``aux_weight * CE(aux)`` per head
    (0.3 in the paper). Without aux heads it always returns plain logits.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        batch_norm: bool = False,
        factorized: bool = False,
        residual: bool = False,
        residual_scale: float = 0.2,
        aux_logits: bool = False,
        dropout: float = 0.0,
        init: str = "xavier",
        width_ratio: int = 1,
    ) -> None:
        super().__init__()
        if not (isinstance(width_ratio, int) and 1 <= width_ratio <= 16):
            raise ValueError(
                f"GoogLeNet: width_ratio divides the conv widths and must be an integer 1-16, "
                f"got {width_ratio!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GoogLeNet: dropout must be in [0, 1), got {dropout!r}")
        if residual and not residual_scale > 0:
            raise ValueError(
                f"GoogLeNet: residual_scale must be > 0 (the paper uses 0.1-0.3), "
                f"got {residual_scale!r}"
            )
        bn = batch_norm

        def narrow(width: int) -> int:  # width_ratio divides every conv's width, as in VGG
            return max(1, width // width_ratio)

        stem, channels = narrow(64), narrow(STEM_CHANNELS)
        self.b1 = nn.Sequential(
            conv_relu(in_channels, stem, 7, stride=2, padding=3, batch_norm=bn),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.b2 = nn.Sequential(
            conv_relu(stem, stem, 1, batch_norm=bn),
            conv_relu(stem, channels, 3, padding=1, batch_norm=bn),
            nn.MaxPool2d(3, stride=2, padding=1),
        )

        stages: dict[str, nn.Sequential] = {}
        aux_heads: dict[str, nn.Module] = {}
        for stage, names in STAGES.items():
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            for name in names:
                c1, (r3, c3), (r5, c5), c4 = INCEPTION_CHANNELS[name]
                block = Inception(
                    channels,
                    narrow(c1),
                    (narrow(r3), narrow(c3)),
                    (narrow(r5), narrow(c5)),
                    narrow(c4),
                    batch_norm=bn,
                    factorized=factorized,
                    residual=residual,
                    residual_scale=residual_scale,
                )
                layers[name] = block
                channels = block.out_channels
                if aux_logits and name in AUX_AFTER:
                    aux_heads[name] = AuxClassifier(channels, num_classes, batch_norm=bn)
            if stage == "b5":
                layers["gap"] = nn.AdaptiveAvgPool2d(1)
                layers["flatten"] = nn.Flatten()
            else:
                layers["pool"] = nn.MaxPool2d(3, stride=2, padding=1)
            stages[stage] = nn.Sequential(layers)
        self.b3, self.b4, self.b5 = stages["b3"], stages["b4"], stages["b5"]
        self.aux_heads = nn.ModuleDict(aux_heads) if aux_logits else None

        head: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        self.fc = nn.Sequential(*head, nn.Linear(channels, num_classes))
        init_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.b3(self.b2(self.b1(x)))
        # The aux heads only train the middle of the net; at inference they are dropped.
        use_aux = self.aux_heads is not None and self.training
        aux_outputs: list[torch.Tensor] = []
        for name, layer in self.b4.named_children():
            x = layer(x)
            if use_aux and name in self.aux_heads:
                aux_outputs.append(self.aux_heads[name](x))
        logits = self.fc(self.b5(x))
        return (logits, aux_outputs) if use_aux else logits
