"""Several models side by side at one input size: parameters (and where they sit), FLOPs,
activation memory and parameter memory. Answers "how does GoogLeNet cut the parameter count?"
(no 4096-wide FC layers) and "how much more does VGG cost than AlexNet?"."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from cnnlab.analysis.layers import ModelProfile
from cnnlab.analysis.memory import MemoryEstimate
from cnnlab.analysis.min_size import MinSizeReport
from cnnlab.analysis.tables import Table, count, mb, percent, si
from cnnlab.errors import ConfigError
from cnnlab.models.layers import CONV_TYPES
from cnnlab.resolvers import config_dir

# Parameters of these leaf types are reported as their own columns.
CONV_TYPE_NAMES = tuple(t.__name__ for t in CONV_TYPES)
FC_TYPES = ("Linear",)


def model_names() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))


def with_model(cfg: DictConfig, name: str) -> DictConfig:
    """A copy of ``cfg`` whose ``model`` is ``conf/model/<name>.yaml`` (its interpolations, e.g.
    ``${dataset.in_channels}``, resolve against the copy)."""
    path = config_dir() / "model" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown model {name!r} in models=[...]; choose from: {', '.join(model_names())}"
        )
    copy = cfg.copy()
    with open_dict(copy):
        copy.model = OmegaConf.load(path)
    return copy


@dataclass
class CompareRow:
    model: str
    target: str
    params: int | None = None
    conv_params: int | None = None
    fc_params: int | None = None
    param_bytes: int | None = None
    flops_per_image: int | None = None
    activation_bytes_per_image: int | None = None  # forward, every output once
    saved_bytes_per_image: int | None = None  # kept for backward in training
    training_bytes: int | None = None  # params + grads + optimizer state + saved activations
    largest_layer: str | None = None
    largest_layer_share: float | None = None
    min_image_size: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_row(
    name: str,
    target: str,
    profile: ModelProfile | None,
    memory: MemoryEstimate | None,
    min_size: MinSizeReport | None = None,
    error: str | None = None,
) -> CompareRow:
    row = CompareRow(model=name, target=target, error=error)
    if min_size is not None:
        row.min_image_size = min_size.minimum
    if profile is None or memory is None:
        return row
    by_type = profile.params_by_type()
    largest = profile.dominant()["params"]
    row.params = profile.total_params
    row.conv_params = sum(by_type.get(t, 0) for t in CONV_TYPE_NAMES)
    row.fc_params = sum(by_type.get(t, 0) for t in FC_TYPES)
    row.param_bytes = profile.total_param_bytes
    row.flops_per_image = profile.total_flops_per_image
    row.activation_bytes_per_image = profile.total_activation_bytes_per_image
    row.saved_bytes_per_image = memory.activation_bytes // memory.batch_size
    row.training_bytes = memory.total_bytes
    row.largest_layer = f"{largest['layer']} ({largest['type']})"
    row.largest_layer_share = largest["share"]
    return row


def compare_table(
    rows: list[CompareRow], image_size: int, batch_size: int, optimizer: str
) -> Table:
    table = Table(
        title=f"Models at {image_size}x{image_size} px (training memory: batch {batch_size}, "
        f"{optimizer})",
        columns=[
            "model",
            "params",
            "conv params",
            "FC params",
            "param MB",
            "FLOPs/img",
            "FLOPs vs first",
            "fwd act. MB/img",
            "saved MB/img",
            "train MB",
            "largest layer (share)",
        ],
        text_columns=(0, 10),
    )
    show_min = any(r.min_image_size is not None for r in rows)
    if show_min:
        table.columns.append("min px")
    reference = next((r.flops_per_image for r in rows if r.flops_per_image), None)
    for r in rows:
        extra = [str(r.min_image_size) if r.min_image_size is not None else "-"] if show_min else []
        if r.params is None:
            table.add(r.model, *(["-"] * 9), f"cannot run: {r.error}", *extra)
            continue
        table.add(
            r.model,
            count(r.params),
            count(r.conv_params),
            count(r.fc_params),
            mb(r.param_bytes),
            si(r.flops_per_image),
            f"{r.flops_per_image / reference:.2f}" if reference else "-",
            mb(r.activation_bytes_per_image),
            mb(r.saved_bytes_per_image),
            mb(r.training_bytes),
            f"{r.largest_layer} {percent(r.largest_layer_share)}",
            *extra,
        )
    return table
