"""Per-layer measurements of one forward pass: output shape, parameters, activation bytes and
FLOPs, for every leaf layer and for the top-level blocks.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add of convolutions
and matrix products; elementwise ops such as ReLU, pooling and batch norm count 0), shapes and
bytes from forward hooks. Nothing is counted by hand. The pass normally runs on the ``meta``
device, where tensors have shapes but no data, so even VGG-16 at a batch of 256 costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Containers these implementations wrap around the lecture's flat ``nn.Sequential`` (torchvision's
# features/classifier convention, ResNet's stages/head, GoogLeNet's fc). Opening them one level
# gives the blocks that printing the lecture's net lists: VGG's five vgg_blocks, GoogLeNet's
# b1..b5, ResNet's stages.
WRAPPERS = ("features", "classifier", "stages", "head", "fc")


@dataclass
class LayerStats:
    """One module's numbers for one forward pass of the whole batch, divided by the batch size
    where they scale with it (``*_per_image``)."""

    name: str
    type: str
    detail: str
    output_shape: list[int] | None  # of one image; None: the module did not run (aux heads)
    params: int
    param_bytes: int
    activation_bytes_per_image: int  # the module's output
    flops_per_image: int
    input_bytes: int  # whole batch, for the arithmetic intensity
    output_bytes: int  # whole batch
    flops: int  # whole batch
    weight_layers: int  # leaf layers with parameters inside (1 for a conv or linear layer)

    @property
    def bytes_moved(self) -> int:
        """Weights read once per batch plus the input read and the output written."""
        return self.param_bytes + self.input_bytes + self.output_bytes

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per byte moved at the profiled batch size."""
        return self.flops / self.bytes_moved if self.bytes_moved else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"arithmetic_intensity": round(self.arithmetic_intensity, 3)}


@dataclass
class ModelProfile:
    model: str
    input_shape: list[int]  # [batch, channels, height, width] of the profiled pass
    leaves: list[LayerStats]
    blocks: list[LayerStats]
    total_params: int
    total_param_bytes: int
    total_flops_per_image: int
    # Every module output once (in-place ops and views share their input's storage).
    total_activation_bytes_per_image: int
    notes: list[str] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return self.input_shape[0]

    def dominant(self) -> dict[str, dict[str, Any]]:
        """The leaf layers holding the most parameters, FLOPs and activation bytes."""
        out: dict[str, dict[str, Any]] = {}
        for key, attr, total in (
            ("params", "params", self.total_params),
            ("flops", "flops_per_image", self.total_flops_per_image),
            ("activations", "activation_bytes_per_image", self.total_activation_bytes_per_image),
        ):
            layer = max(self.leaves, key=lambda s, a=attr: getattr(s, a))
            value = getattr(layer, attr)
            out[key] = {
                "layer": layer.name,
                "type": layer.type,
                "detail": layer.detail,
                "value": value,
                "share": value / total if total else 0.0,
            }
        return out

    def params_by_type(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for layer in self.leaves:
            if layer.params:
                counts[layer.type] = counts.get(layer.type, 0) + layer.params
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_shape": self.input_shape,
            "totals": {
                "params": self.total_params,
                "param_bytes": self.total_param_bytes,
                "flops_per_image": self.total_flops_per_image,
                "activation_bytes_per_image": self.total_activation_bytes_per_image,
                "blocks": len(self.blocks),
                "blocks_with_params": sum(1 for b in self.blocks if b.params),
                "leaf_layers": len(self.leaves),
                "leaf_layers_with_params": sum(1 for s in self.leaves if s.params),
                "params_by_type": self.params_by_type(),
            },
            "dominant": self.dominant(),
            "blocks": [b.to_dict() for b in self.blocks],
            "leaves": [s.to_dict() for s in self.leaves],
            "notes": self.notes,
        }


def tensors_in(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a module's input or output (tensors, tuples, lists, dicts)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from tensors_in(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from tensors_in(item)


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def block_names(model: nn.Module) -> list[str]:
    """The top-level blocks: the model's children, with the ``WRAPPERS`` opened one level."""
    names: list[str] = []
    for name, child in model.named_children():
        if name in WRAPPERS and isinstance(child, nn.Sequential):
            names += [f"{name}.{sub}" for sub, _ in child.named_children()]
        else:
            names.append(name)
    return names


def leaf_names(model: nn.Module) -> list[str]:
    """Modules without children, plus modules that hold parameters of their own besides children
    (their own weights would otherwise be missing from the leaf table)."""
    names = []
    for name, module in model.named_modules():
        if not name:
            continue
        own_params = any(True for _ in module.parameters(recurse=False))
        if not any(True for _ in module.children()) or own_params:
            names.append(name)
    return names


@dataclass
class _Record:
    input_bytes: int = 0
    output_bytes: int = 0
    output_shape: list[int] | None = None
    calls: int = 0


def _detail(module: nn.Module) -> str:
    extra = module.extra_repr()
    return f"{type(module).__name__}({extra})" if extra else type(module).__name__


def profile_model(model: nn.Module, input_shape: tuple[int, int, int, int]) -> ModelProfile:
    """Run one forward pass of ``torch.zeros(input_shape)`` (on the model's device) in eval mode
    and measure every leaf layer and every block. The model is left in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    batch = input_shape[0]
    names = {module: name for name, module in model.named_modules()}
    records: dict[str, _Record] = {name: _Record() for name in names.values()}
    outputs: dict[int, Any] = {}  # id -> storage, kept alive so that ids stay unique

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        record = records[names[module]]
        record.calls += 1
        record.input_bytes += sum(nbytes(t) for t in tensors_in(inputs))
        out = list(tensors_in(output))
        record.output_bytes += sum(nbytes(t) for t in out)
        if out:
            record.output_shape = list(out[0].shape[1:])
        for t in out:
            storage = t.untyped_storage()
            outputs.setdefault(id(storage), storage)

    handles = [m.register_forward_hook(hook) for m in names]
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()

    # FlopCounterMode names modules "<ClassName>.<qualified name>".
    root = type(model).__name__
    flops_by_module = {
        key.removeprefix(f"{root}."): sum(ops.values())
        for key, ops in counter.get_flop_counts().items()
    }
    modules = dict(model.named_modules())
    leaf_set = set(leaf_names(model))

    def record_of(name: str) -> tuple[_Record, int]:
        """The module's record and FLOPs. A container whose forward is never called (GoogLeNet
        iterates over b4's children itself) is measured through its children that ran."""
        record = records[name]
        children = [f"{name}.{sub}" for sub, _ in modules[name].named_children()]
        ran = [c for c in children if records[c].calls]
        if record.calls or not ran:
            return record, flops_by_module.get(name, 0)
        first, last = records[ran[0]], records[ran[-1]]
        merged = _Record(first.input_bytes, last.output_bytes, last.output_shape, 1)
        return merged, sum(flops_by_module.get(c, 0) for c in ran)

    def stats(name: str, leaf: bool) -> LayerStats:
        module = modules[name]
        record, flops = record_of(name)
        params = list(module.parameters(recurse=not leaf))
        inner = [n for n in leaf_set if n == name or n.startswith(f"{name}.")]
        return LayerStats(
            name=name,
            type=type(module).__name__,
            detail=_detail(module),
            output_shape=record.output_shape,
            params=sum(p.numel() for p in params),
            param_bytes=sum(nbytes(p) for p in params),
            activation_bytes_per_image=record.output_bytes // batch,
            flops_per_image=flops // batch,
            input_bytes=record.input_bytes,
            output_bytes=record.output_bytes,
            flops=flops,
            weight_layers=sum(
                1 for n in inner if any(True for _ in modules[n].parameters(recurse=False))
            ),
        )

    parameters = list(model.parameters())
    profile = ModelProfile(
        model=type(model).__name__,
        input_shape=list(input_shape),
        leaves=[stats(n, leaf=True) for n in leaf_names(model)],
        blocks=[stats(n, leaf=False) for n in block_names(model)],
        total_params=sum(p.numel() for p in parameters),
        total_param_bytes=sum(nbytes(p) for p in parameters),
        total_flops_per_image=counter.get_total_flops() // batch,
        total_activation_bytes_per_image=sum(s.nbytes() for s in outputs.values()) // batch,
    )
    idle = [s.name for s in profile.leaves if s.output_shape is None and s.params]
    if idle:
        shown = ", ".join(idle[:4]) + (f" and {len(idle) - 4} more" if len(idle) > 4 else "")
        profile.notes.append(
            f"{len(idle)} layers with parameters did not run in eval mode ({shown}; e.g. "
            "auxiliary heads, training only): their parameters count, their FLOPs do not"
        )
    return profile
