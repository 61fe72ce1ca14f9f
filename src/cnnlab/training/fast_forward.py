"""A faster training forward for the full batches of a run: CUDA graphs (``cuda_graphs=true``)
or torch.compile (``compile=true``).

Both record the model for one input shape in one mode, and each other shape or mode would be
recorded again: torch.compile compiles anew (a short GoogLeNet run on 2 CPU cores compiled four
times: the sanity check's eval batches, their short last batch with a dynamic batch size, the
training batches and the test's inference-mode batches; 201 s against 24 s eager, and 39 s
compiled once as here; docs/performance.md). What a run does besides its full training batches
(validation and test in eval mode, the short last batch of each split) is a small share of its
work, so it runs the model eagerly, and the model is recorded once per run, from its first
training batch. The model itself keeps its eager forward and its parameters: checkpoints are
the same with and without either option.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn

from cnnlab.errors import ConfigError


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


# --- cuda_graphs=true ------------------------------------------------------------------------
# On a fast GPU the small models of the lecture can wait on the CPU rather than on the GPU: a
# GoogLeNet step at 96 px launches hundreds of small kernels (convolutions, ReLUs, bf16 casts,
# concatenations and their gradients), each queued by Python and PyTorch's dispatcher. A CUDA graph
# records those launches once and replays them with one call (on an H200 the GoogLeNet seed
# recipe went from 7,239 to 12,888 training images/s; docs/performance.md).
#
# The capture is ``torch.cuda.make_graphed_callables``: the model's forward becomes one CUDA graph
# and its backward another, inside one autograd node, so Lightning's loop, the loss, the optimizer
# and the metrics stay as they are. What the graph cannot do runs eagerly, unchanged
# (FullBatchTrainingForward): eval mode (validation and test), and a batch of another shape than the
# captured one (the epoch's short last batch).
#
# The capture runs the first training batch four times more (three warm-up passes, in which cuDNN
# autotunes, and the recording), so BatchNorm's running statistics see that batch four extra times.


class GraphedTrainingForward(FullBatchTrainingForward):
    """Calls ``model`` like ``model(x)``; in training mode, batches shaped like the first one run
    as a replay of a CUDA graph recorded from that first batch (FullBatchTrainingForward).

    Must first be called inside the training step (Lightning's autocast context is on there, so
    the graph records the bf16 kernels of ``precision=bf16-mixed``).
    """

    def build(self, x: torch.Tensor) -> Callable[[torch.Tensor], object]:
        return capture_training_forward(self.model, x)


def capture_training_forward(model: nn.Module, x: torch.Tensor) -> Callable[..., object]:
    """The model's training-mode forward (and its backward) recorded as CUDA graphs for batches
    shaped like ``x``; ``model`` itself keeps its eager forward."""
    if x.device.type != "cuda":
        raise RuntimeError(f"cuda_graphs=true needs the batch on a CUDA GPU, got {x.device}")
    # The graph's static input: later batches are copied into it before each replay.
    sample = x.detach().clone()
    # make_graphed_callables replaces model.forward by a function that replays the graph in the
    # mode it was recorded in. Keep that function for the batches it fits, and give the model its
    # own forward back for everything else (eval mode, a short last batch).
    graphed = torch.cuda.make_graphed_callables(model, (sample,), allow_unused_input=True)
    replay = graphed.forward
    del model.forward
    return replay


def check_cuda_graphs(cfg: DictConfig, trainer: L.Trainer) -> None:
    """cuda_graphs=true where GraphedTrainingForward can keep what it promises, or a ConfigError."""
    if not cfg.get("cuda_graphs"):
        return
    why = None
    if trainer.strategy.root_device.type != "cuda":
        why = f"it needs a CUDA GPU and this run trains on {trainer.strategy.root_device}"
    elif trainer.world_size > 1:
        why = "it is for one GPU (DDP's gradient hooks would run inside the graph)"
    elif cfg.get("compile"):
        why = "compile=true is on too (choose one: torch.compile records its own graphs)"
    elif trainer.accumulate_grad_batches != 1:
        why = "the replayed backward overwrites the gradients that accumulate_grad_batches adds"
    if why:
        raise ConfigError(f"cuda_graphs=true cannot be used here: {why}. Drop cuda_graphs=true.")
