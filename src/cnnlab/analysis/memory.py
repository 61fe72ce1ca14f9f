"""How much memory one training step needs: parameters + gradients + optimizer state +
activations kept for backward, each measured rather than counted by hand.

- Activations kept for backward: the tensors autograd saves during a training-mode forward pass
  (``torch.autograd.graph.saved_tensors_hooks``), each storage once, parameters left out. This
  is what a deeper or wider net really costs: an in-place ReLU saves nothing new, a dropout
  layer saves its mask, a conv saves its input.
- Optimizer state: the tensors the configured optimizer holds after one ``step()``.
- On a GPU the same step can be run for real: ``torch.cuda.max_memory_allocated`` gives the
  peak, which also holds what the estimate leaves out (cuDNN workspaces, temporaries of the
  backward pass, the allocator's rounding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.analysis.layers import nbytes, tensors_in

OptimizerFactory = Callable[..., torch.optim.Optimizer]
# Optimizers whose step cannot run on the meta device (L-BFGS reads the loss as a Python float)
# are measured on this many parameters of a small real problem and scaled to the model's count.
PROXY_SHAPE = (10, 400)


@dataclass
class MemoryEstimate:
    batch_size: int
    param_bytes: int
    grad_bytes: int
    optimizer: str
    optimizer_state_bytes: int
    optimizer_note: str
    activation_bytes: int  # saved for backward, whole batch

    @property
    def total_bytes(self) -> int:
        return (
            self.param_bytes + self.grad_bytes + self.optimizer_state_bytes + self.activation_bytes
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"total_bytes": self.total_bytes}


def training_loss(output: Any, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the main logits plus that of any auxiliary heads (GoogLeNet), as the
    training loop computes it; the weights of the aux terms do not change the memory."""
    if isinstance(output, tuple):
        logits, aux = output
        return F.cross_entropy(logits, labels) + sum(F.cross_entropy(a, labels) for a in aux)
    return F.cross_entropy(output, labels)


def saved_activation_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Bytes autograd keeps for the backward pass of one training-mode forward pass and loss on
    ``torch.zeros(input_shape)``, each storage counted once and parameters left out."""
    model.train()
    device = next(model.parameters()).device
    param_storages = {id(p.untyped_storage()) for p in model.parameters()}
    saved: dict[int, Any] = {}  # id -> storage, kept alive so that ids stay unique

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if id(storage) not in param_storages:
            saved.setdefault(id(storage), storage)
        return t

    x = torch.zeros(input_shape, device=device)
    labels = torch.zeros(input_shape[0], dtype=torch.long, device=device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        training_loss(model(x), labels)
    return sum(s.nbytes() for s in saved.values())


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(nbytes(t) for state in optimizer.state.values() for t in tensors_in(state))


def _proxy_state_bytes(factory: OptimizerFactory, model_params: int) -> tuple[int, str]:
    generator = torch.Generator().manual_seed(0)
    weight = nn.Parameter(torch.randn(PROXY_SHAPE, generator=generator) * 0.01)
    x = torch.randn(256, PROXY_SHAPE[1], generator=generator)
    y = torch.randint(0, PROXY_SHAPE[0], (256,), generator=generator)
    optimizer = factory([weight])

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T, y)
        loss.backward()
        return loss

    optimizer.step(closure)
    per_param = _state_bytes(optimizer) / weight.numel()
    note = (
        f"after one step on a {weight.numel()}-parameter problem, scaled to the model "
        f"({per_param:.1f} bytes per parameter)"
    )
    return round(per_param * model_params), note


def optimizer_state_bytes(model: nn.Module, factory: OptimizerFactory) -> tuple[int, str]:
    """Bytes of the optimizer's state after one step for the model's trainable parameters,
    stepped on meta copies of them (the model itself is not touched)."""
    params = [p for p in model.parameters() if p.requires_grad]
    copies = [nn.Parameter(torch.empty_like(p, device="meta")) for p in params]
    for p in copies:
        p.grad = torch.zeros_like(p)
    optimizer = factory(copies)
    try:
        optimizer.step(lambda: torch.zeros((), device="meta"))
    except (RuntimeError, NotImplementedError):
        return _proxy_state_bytes(factory, sum(p.numel() for p in params))
    return _state_bytes(optimizer), "after one step"


def estimate_training_memory(
    model: nn.Module, factory: OptimizerFactory, input_shape: tuple[int, ...]
) -> MemoryEstimate:
    """The four parts of a training step's memory for a batch of ``input_shape``."""
    params = list(model.parameters())
    state_bytes, note = optimizer_state_bytes(model, factory)
    return MemoryEstimate(
        batch_size=input_shape[0],
        param_bytes=sum(nbytes(p) for p in params),
        grad_bytes=sum(nbytes(p) for p in params if p.requires_grad),
        optimizer=optimizer_name(factory),
        optimizer_state_bytes=state_bytes,
        optimizer_note=note,
        activation_bytes=saved_activation_bytes(model, input_shape),
    )


def optimizer_name(factory: OptimizerFactory) -> str:
    """'SGD', 'SGD(momentum=0.9)', 'Adam' for a Hydra ``_partial_`` optimizer config."""
    func = getattr(factory, "func", factory)  # functools.partial from Hydra's _partial_
    keywords = getattr(factory, "keywords", {}) or {}
    name = getattr(func, "__name__", str(func))
    if keywords.get("momentum"):
        name += f"(momentum={keywords['momentum']})"
    return name


def measure_cuda_step(
    build: Callable[[], nn.Module],
    factory: OptimizerFactory,
    input_shape: tuple[int, ...],
    num_classes: int,
    device: torch.device,
) -> dict[str, Any]:
    """Build the model on ``device`` and run one real training step (forward, loss, backward,
    optimizer step); returns the peak (``torch.cuda.max_memory_allocated``) and what is still
    held afterwards (parameters, gradients, optimizer state), both counted from before the
    model was built. The caching allocator rounds every tensor up to 512 bytes.

    A warm-up step on a throwaway copy comes first: cuBLAS and cuDNN allocate their workspaces
    (tens of MB on a Hopper GPU) at their first call and keep them for the process, and those
    belong to the libraries, not to the model."""

    def one_step() -> tuple[nn.Module, torch.optim.Optimizer]:
        """A new model's step on random data; the model and optimizer are what a run keeps."""
        model = build().to(device).train()
        # In a dict so that the batch can be freed before "after the step" is read.
        batch = {
            "x": torch.randn(input_shape, device=device),
            "y": torch.randint(0, num_classes, (input_shape[0],), device=device),
        }
        optimizer = factory(model.parameters())

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = training_loss(model(batch["x"]), batch["y"])
            loss.backward()
            return loss.detach()

        optimizer.step(closure)
        batch.clear()
        return model, optimizer

    one_step()  # the warm-up: its model and optimizer are freed at once
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    kept = one_step()
    torch.cuda.synchronize(device)
    measured = {
        "device": torch.cuda.get_device_name(device),
        "peak_bytes": torch.cuda.max_memory_allocated(device) - base,
        "after_step_bytes": torch.cuda.memory_allocated(device) - base,
    }
    del kept
    return measured
