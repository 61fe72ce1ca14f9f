"""The smallest square input a model accepts, found by trying forward passes, and the module
where the next smaller input breaks.

``device="meta"`` runs the search on shapes only (no weights are initialised, no arithmetic is
done), which makes it instant even for VGG at 512 px; shape errors are raised there just as on
the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

ModelBuilder = Callable[[int], nn.Module]
Device = str | torch.device


def forward_error(
    build: ModelBuilder, in_channels: int, size: int, device: Device = "cpu"
) -> str | None:
    """None if a model built for ``size`` runs a forward pass on one [1, C, size, size] input,
    else the error message (the stage where it breaks)."""
    try:
        with torch.device(device):
            model = build(size)
        was_training = model.training
        model.eval()  # batch norm on a 1x1 map with batch 1 is only an error in training mode
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size, device=device))
        model.train(was_training)
    except (RuntimeError, ValueError) as err:
        return str(err).splitlines()[0]
    return None


def min_input_size(
    build: ModelBuilder, in_channels: int, upper: int = 512, device: Device = "cpu"
) -> int:
    """Binary search for the smallest working size in [1, upper]. Assumes that a size that works
    implies every larger size works, which holds for conv/pool stacks in floor mode."""
    if forward_error(build, in_channels, upper, device) is not None:
        raise ValueError(f"the model does not accept even a {upper}x{upper} input")
    lo, hi = 1, upper  # invariant: hi works
    while lo < hi:
        mid = (lo + hi) // 2
        if forward_error(build, in_channels, mid, device) is None:
            hi = mid
        else:
            lo = mid + 1
    return hi


def failing_module(
    model: nn.Module, in_channels: int, size: int, device: Device = "cpu"
) -> tuple[str | None, str | None, str | None]:
    """Run ``model`` on a [1, C, size, size] input; if it raises, return the qualified name and
    type of the innermost module whose forward was running, and the error's first line."""
    names = {module: name for name, module in model.named_modules()}
    running: list[nn.Module] = []

    def enter(module: nn.Module, _inputs: tuple) -> None:
        running.append(module)

    def leave(_module: nn.Module, _inputs: tuple, _output: object) -> None:
        running.pop()  # a hook that returned something would replace the module's output

    handles = []
    for module in names:
        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size, device=device))
    except (RuntimeError, ValueError) as err:
        where = running[-1] if running else model
        return names[where] or "(model)", type(where).__name__, str(err).splitlines()[0]
    finally:
        for handle in handles:
            handle.remove()
    return None, None, None


@dataclass
class MinSizeReport:
    minimum: int  # smallest square input that runs
    below: int  # minimum - 1, the size that was diagnosed
    failing_module: str | None  # where a model built for `minimum` breaks on a `below` input
    failing_type: str | None
    error: str | None
    constructor_error: str | None  # what the model's constructor says about `below`, if it refuses

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        text = f"smallest input: {self.minimum}x{self.minimum}"
        if self.failing_module:
            text += (
                f"; a {self.below}x{self.below} input breaks in {self.failing_module} "
                f"({self.failing_type}): {self.error}"
            )
        if self.constructor_error:
            text += f"; the constructor for {self.below} px says: {self.constructor_error}"
        return text


def min_size_report(
    build: ModelBuilder, in_channels: int, upper: int = 512, device: Device = "meta"
) -> MinSizeReport:
    """Search the minimum, then find where the next smaller input breaks: the model built for the
    minimum is fed a (minimum - 1) input, so the error comes from the layer whose output
    vanishes, not from a constructor's own size check."""
    minimum = min_input_size(build, in_channels, upper, device)
    below = minimum - 1
    constructor_error = None
    try:
        with torch.device(device):
            build(below)
    except (RuntimeError, ValueError) as err:
        constructor_error = str(err).splitlines()[0]
    with torch.device(device):
        model = build(minimum)
    name, kind, error = failing_module(model, in_channels, below, device)
    return MinSizeReport(minimum, below, name, kind, error, constructor_error)
