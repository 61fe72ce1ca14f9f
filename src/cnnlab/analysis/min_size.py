"""The smallest square input a model accepts, found by trying forward passes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ModelBuilder = Callable[[int], nn.Module]


def forward_error(build: ModelBuilder, in_channels: int, size: int) -> str | None:
    """None if a model built for ``size`` runs a forward pass on one [1, C, size, size] input,
    else the error message (the stage where it breaks)."""
    try:
        model = build(size)
        was_training = model.training
        model.eval()  # batch norm on a 1x1 map with batch 1 is only an error in training mode
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size))
        model.train(was_training)
    except (RuntimeError, ValueError) as err:
        return str(err).splitlines()[0]
    return None


def min_input_size(build: ModelBuilder, in_channels: int, upper: int = 512) -> int:
    """Binary search for the smallest working size in [1, upper]. Assumes that a size that works
    implies every larger size works, which holds for conv/pool stacks in floor mode."""
    if forward_error(build, in_channels, upper) is not None:
        raise ValueError(f"the model does not accept even a {upper}x{upper} input")
    lo, hi = 1, upper  # invariant: hi works
    while lo < hi:
        mid = (lo + hi) // 2
        if forward_error(build, in_channels, mid) is None:
            hi = mid
        else:
            lo = mid + 1
    return hi
