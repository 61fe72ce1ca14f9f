"""CUDA graphs for the training forward and backward pass (``cuda_graphs=true``).

On a fast GPU the small models of the lecture can wait on the CPU rather than on the GPU: a
GoogLeNet step at 96 px launches hundreds of small kernels (convolutions, ReLUs, bf16 casts,
concatenations and their gradients), each queued by Python and PyTorch's dispatcher. A CUDA graph
records those launches once and replays them with one call (on an H200 the GoogLeNet seed
recipe went from 7,239 to 12,888 training images/s; README "On a GPU").

The capture is ``torch.cuda.make_graphed_callables``: the model's forward becomes one CUDA graph
and its backward another, inside one autograd node, so Lightning's loop, the loss, the optimizer
and the metrics stay as they are. What the graph cannot do runs eagerly, unchanged
(cnnlab.fast_training): eval mode (validation and test), and a batch of another shape than the
captured one (the epoch's short last batch).

The capture runs the first training batch four times more (three warm-up passes, in which cuDNN
autotunes, and the recording), so BatchNorm's running statistics see that batch four extra times.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cnnlab.fast_training import FullBatchTrainingForward


class GraphedTrainingForward(FullBatchTrainingForward):
    """Calls ``model`` like ``model(x)``; in training mode, batches shaped like the first one run
    as a replay of a CUDA graph recorded from that first batch (cnnlab.fast_training).

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
