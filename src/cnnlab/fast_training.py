"""A faster training forward for the full batches of a run: CUDA graphs (``cuda_graphs=true``,
cnnlab.cuda_graphs) or torch.compile (``compile=true``).

Both record the model for one input shape in one mode, and each other shape or mode would be
recorded again: torch.compile compiles anew (a short GoogLeNet run on 2 CPU cores compiled four
times: the sanity check's eval batches, their short last batch with a dynamic batch size, the
training batches and the test's inference-mode batches; 201 s against 24 s eager, and 39 s
compiled once as here; README "On a GPU"). What a run does besides its full training batches
(validation and test in eval mode, the short last batch of each split) is a small share of its
work, so it runs the model eagerly, and the model is recorded once per run, from its first
training batch. The model itself keeps its eager forward and its parameters: checkpoints are
the same with and without either option.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class FullBatchTrainingForward:
    """Calls ``model`` like ``model(x)``; in training mode, batches shaped like the first one go
    to what ``build(first batch)`` returns: a faster equivalent of the model's forward (and
    backward). ``fast_batches`` counts them (tests and curious users)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.fast: Callable[[torch.Tensor], object] | None = None
        self.shape: torch.Size | None = None
        self.fast_batches = 0

    def build(self, x: torch.Tensor) -> Callable[[torch.Tensor], object]:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> object:
        if not self.model.training:
            return self.model(x)
        if self.fast is None:
            self.fast, self.shape = self.build(x), x.shape
        if x.shape != self.shape:
            return self.model(x)
        self.fast_batches += 1
        return self.fast(x)


class CompiledTrainingForward(FullBatchTrainingForward):
    """``compile=true``: the full training batches run ``torch.compile(model)``, compiled once
    for their shape (``dynamic=False``: no recompilation for a dynamic batch size, and kernels
    specialised to it)."""

    def build(self, x: torch.Tensor) -> Callable[[torch.Tensor], object]:
        return torch.compile(self.model, dynamic=False)
