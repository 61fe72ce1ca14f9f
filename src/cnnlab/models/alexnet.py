"""AlexNet as in the lecture (d2l "Deep Convolutional Neural Networks (AlexNet)"), one class
for the lecture's net, the paper's local response normalisation, a simplified (narrower) AlexNet
and a variant designed for 28x28 inputs.

Defaults reproduce the lecture's net for 1-channel 224x224 inputs (Fashion-MNIST upsampled):

    conv 96@11x11 stride 4 pad 1 -> ReLU -> max-pool 3/2        224 -> 54 -> 26
    conv 256@5x5 pad 2          -> ReLU -> max-pool 3/2          26 -> 26 -> 12
    conv 384@3x3 pad 1 -> ReLU                                    12
    conv 384@3x3 pad 1 -> ReLU                                    12
    conv 256@3x3 pad 1 -> ReLU -> max-pool 3/2                    12 -> 5
    flatten (256*5*5) -> FC 4096 -> ReLU -> dropout 0.5
                      -> FC 4096 -> ReLU -> dropout 0.5 -> FC 10

That is 46,764,746 parameters for 10 classes, 92% of them in the first two FC layers.

``lrn: inter`` adds the paper's normalisation (n=5, k=2, alpha=1e-4, beta=0.75) to stages 1
and 2 in the lecture's CONV-POOL-NORM order, i.e. after the pooling. The paper itself normalised
before pooling; after is the order of the lecture's layer listing and of Caffe's reference
model, and it is cheaper (the map is 4x smaller).
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models.layers import (
    LRN_KINDS,
    conv_output_size,
    dense_head,
    init_weights,
    make_activation,
    make_lrn,
    make_pool,
)

# The lecture's (and the paper's) five conv layers: (channels, kernel, stride, padding).
# The first row is the "stem"; its kernel/stride/padding are knobs for small inputs.
ALEXNET_CONVS: tuple[tuple[int, int, int, int], ...] = (
    (96, 11, 4, 1),
    (256, 5, 1, 2),
    (384, 3, 1, 1),
    (384, 3, 1, 1),
    (256, 3, 1, 1),
)
# Overlapping max-pooling (3/2) follows these conv layers (1-based), LRN the first two pools.
POOL_AFTER = (1, 2, 5)
LRN_AFTER = (1, 2)


class AlexNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 224,
        width_multiplier: float = 1.0,
        fc_width: int = 4096,
        stem_kernel: int = 11,
        stem_stride: int = 4,
        stem_padding: int = 1,
        pool: str = "max",
        pool_kernel: int = 3,
        pool_stride: int = 2,
        pool_padding: int = 0,
        lrn: str = "none",
        lrn_size: int = 5,
        lrn_k: float = 2.0,
        lrn_alpha: float = 1e-4,
        lrn_beta: float = 0.75,
        activation: str = "relu",
        dropout: float = 0.5,
        batch_norm: bool = False,
        init: str = "xavier",
    ) -> None:
        super().__init__()
        if width_multiplier <= 0:
            raise ValueError(f"AlexNet: width_multiplier must be > 0, got {width_multiplier}")
        if fc_width < 1:
            raise ValueError(f"AlexNet: fc_width must be >= 1, got {fc_width}")
        if not 0 <= dropout < 1:
            raise ValueError(f"AlexNet: dropout must be in [0, 1), got {dropout}")
        if lrn not in LRN_KINDS:
            raise ValueError(f"AlexNet: lrn must be one of {', '.join(LRN_KINDS)}, got {lrn!r}")
        if stem_kernel < 1 or stem_stride < 1 or stem_padding < 0:
            raise ValueError(
                "AlexNet: stem_kernel and stem_stride must be >= 1 and stem_padding >= 0, got "
                f"{stem_kernel}, {stem_stride}, {stem_padding}"
            )
        if pool_kernel < 1 or pool_stride < 1 or not 0 <= pool_padding <= pool_kernel // 2:
            raise ValueError(
                "AlexNet: pool_kernel and pool_stride must be >= 1 and pool_padding between 0 "
                f"and pool_kernel // 2, got {pool_kernel}, {pool_stride}, {pool_padding}"
            )

        convs = [(max(1, round(c * width_multiplier)), k, s, p) for c, k, s, p in ALEXNET_CONVS]
        convs[0] = (convs[0][0], stem_kernel, stem_stride, stem_padding)
        pool_window = (pool_kernel, pool_stride, pool_padding)

        def final_size(size: int) -> int:
            for i, (_, k, s, p) in enumerate(convs, start=1):
                size = conv_output_size(size, k, s, p)
                if i in POOL_AFTER and size >= 1:
                    size = conv_output_size(size, *pool_window)
                if size < 1:
                    return 0
            return size

        size = final_size(input_size)
        if size < 1:
            minimum = next((s for s in range(1, 100_000) if final_size(s) >= 1), None)
            raise ValueError(
                f"AlexNet: a {input_size}x{input_size} input shrinks to nothing; this "
                f"configuration needs dataset.image_size >= {minimum} (alexnet28 is the preset "
                "for 28x28 inputs)"
            )

        features: list[nn.Module] = []
        channels = in_channels
        for i, (out, k, s, p) in enumerate(convs, start=1):
            features.append(nn.Conv2d(channels, out, k, stride=s, padding=p))
            if batch_norm:
                features.append(nn.BatchNorm2d(out))
            features.append(make_activation(activation))
            if i in POOL_AFTER:
                features.append(make_pool(pool, *pool_window))
            if i in LRN_AFTER:
                norm = make_lrn(lrn, lrn_size, k=lrn_k, alpha=lrn_alpha, beta=lrn_beta)
                if norm is not None:
                    features.append(norm)
            channels = out
        self.features = nn.Sequential(*features)

        # Dropout was AlexNet's answer to its 4096-wide FC layers overfitting.
        head = dense_head(
            channels * size * size, [fc_width] * 2, num_classes, activation, dropout, batch_norm
        )
        self.classifier = nn.Sequential(*head)
        # The lecture's d2l.init_cnn: Xavier-uniform for every conv and linear layer.
        init_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
