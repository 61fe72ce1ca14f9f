"""``cnnlab-analyze``: answer the exercise questions about a model with measurements.

    cnnlab-analyze model=alexnet dataset.image_size=224      # per-layer tables, memory, roofline
    cnnlab-analyze model=googlenet dataset.image_size=96 min_size=true
    cnnlab-analyze --compare dataset.image_size=224          # alexnet, vgg11, googlenet, resnet18
    cnnlab-analyze models=[vgg11,vgg16] dataset.image_size=224

Writes ``analysis.json`` and ``analysis.md`` into its run directory (outputs/analyze/...). The
shape-only passes run on the ``meta`` device, so nothing is trained and no weights are created.
``cnnlab-analyze --help`` prints the options, config groups and examples
(conf/hydra/help/cnnlab_analyze.yaml, Hydra's help template).
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnlab.analysis import roofline as rl
from cnnlab.analysis.compare import CompareRow, compare_row, compare_table, with_model
from cnnlab.analysis.layers import ModelProfile, profile_model
from cnnlab.analysis.memory import (
    MemoryEstimate,
    estimate_training_memory,
    measure_cuda_step,
    optimizer_name,
)
from cnnlab.analysis.min_size import (
    MinSizeReport,
    min_size_report,
)
from cnnlab.analysis.tables import Table, count, mb, percent, shape, si
from cnnlab.devices import device_description, pick_device
from cnnlab.errors import ConfigError, exit_on_user_error
from cnnlab.resolvers import config_dir
from cnnlab.runs.rebuild import refuse_pickled_rerun
from cnnlab.training.build import build_model, build_optimizer, check_image_size

ANALYSIS_FILE = "analysis.json"
MARKDOWN_FILE = "analysis.md"
# A table or a line of the report, and whether the console shows it (analysis.md has all).
Item = tuple[Table | str, bool]


# --- building blocks -------------------------------------------------------------------------
def input_shape(cfg: DictConfig, batch_size: int) -> tuple[int, int, int, int]:
    size = cfg.dataset.image_size
    return (batch_size, cfg.dataset.in_channels, size, size)


def build_on(cfg: DictConfig, device: str | torch.device) -> nn.Module:
    with torch.device(device):
        return build_model(cfg)


def profile_and_memory(cfg: DictConfig, batch_size: int) -> tuple[ModelProfile, MemoryEstimate]:
    device = cfg.profile_device
    try:
        model = build_on(cfg, device)
        profile = profile_model(model, input_shape(cfg, batch_size))
        memory = estimate_training_memory(
            model, build_optimizer(cfg), input_shape(cfg, batch_size)
        )
    except NotImplementedError as err:
        raise ConfigError(
            f"model {cfg.model._target_} uses an operation the {device} device cannot run "
            f"({err}); set profile_device=cpu"
        ) from err
    return profile, memory


def search_min_size(cfg: DictConfig) -> MinSizeReport:
    try:
        return min_size_report(
            partial(build_model, cfg),
            cfg.dataset.in_channels,
            cfg.min_size_upper,
            device=cfg.profile_device,
        )
    except ValueError as err:
        raise ConfigError(f"min_size: {err}; raise min_size_upper or check the model") from err


# --- tables ----------------------------------------------------------------------------------
def blocks_table(profile: ModelProfile) -> Table:
    table = Table(
        title=f"{profile.model}: top-level blocks (what printing the model lists), "
        f"input {shape(profile.input_shape[1:])}",
        columns=[
            "block",
            "type",
            "output",
            "weight layers",
            "params",
            "param MB",
            "act. MB/img",
            "FLOPs/img",
            "FLOP/byte",
        ],
        text_columns=(0, 1, 2),
    )
    for b in profile.blocks:
        table.add(
            b.name,
            b.type,
            shape(b.output_shape),
            b.weight_layers,
            count(b.params),
            mb(b.param_bytes),
            mb(b.activation_bytes_per_image),
            si(b.flops_per_image),
            f"{b.arithmetic_intensity:.1f}",
        )
    return table


def leaves_table(profile: ModelProfile, rows: dict[str, rl.RooflineRow]) -> Table:
    table = Table(
        title=f"{profile.model}: every leaf layer (FLOP/byte and roofline at batch "
        f"{profile.batch_size})",
        columns=[
            "layer",
            "type",
            "output",
            "params",
            "param MB",
            "act. MB/img",
            "FLOPs/img",
            "FLOP/byte",
            "bound",
            "ms/batch",
        ],
        text_columns=(0, 1, 2, 8),
    )
    for s in profile.leaves:
        row = rows.get(s.name)
        table.add(
            s.name,
            s.type,
            shape(s.output_shape),
            count(s.params),
            mb(s.param_bytes),
            mb(s.activation_bytes_per_image),
            si(s.flops_per_image),
            f"{s.arithmetic_intensity:.1f}",
            row.bound if row else "-",
            f"{1e3 * row.seconds:.3f}" if row else "-",
        )
    return table


def memory_table(memory: MemoryEstimate, measured: dict[str, Any] | None) -> Table:
    table = Table(
        title=f"Training memory for one step at batch {memory.batch_size} (float32)",
        columns=["part", "MB", "how"],
        text_columns=(0, 2),
    )
    table.add("parameters", mb(memory.param_bytes), "every parameter tensor")
    table.add("gradients", mb(memory.grad_bytes), "one per trainable parameter")
    table.add(
        f"optimizer state ({memory.optimizer})",
        mb(memory.optimizer_state_bytes),
        memory.optimizer_note,
    )
    table.add(
        "activations kept for backward",
        mb(memory.activation_bytes),
        "tensors autograd saves in a training-mode forward pass",
    )
    table.add("estimate (sum)", mb(memory.total_bytes), "")
    if measured and "error" in measured:
        table.add(
            "measured peak", "-", f"one real step on {measured['device']}: {measured['error']}"
        )
    elif measured:
        table.add(
            "measured peak",
            mb(measured["peak_bytes"]),
            f"torch.cuda.max_memory_allocated, one real step on {measured['device']}",
        )
        table.add(
            "measured after the step",
            mb(measured["after_step_bytes"]),
            "params + grads + optimizer state still allocated",
        )
    return table


def headline(profile: ModelProfile) -> list[str]:
    totals = profile.to_dict()["totals"]
    dom = profile.dominant()
    by_type = ", ".join(f"{t} {count(n)}" for t, n in totals["params_by_type"].items())
    lines = [
        f"total: {count(profile.total_params)} parameters ({mb(profile.total_param_bytes)} MB), "
        f"{si(profile.total_flops_per_image)}FLOPs and "
        f"{mb(profile.total_activation_bytes_per_image)} MB of forward activations per image",
        f"{totals['blocks']} blocks, {totals['blocks_with_params']} of them with parameters; "
        f"{totals['leaf_layers']} leaf layers, {totals['leaf_layers_with_params']} of them with "
        f"parameters ({by_type})",
        f"most parameters: {dom['params']['layer']} {dom['params']['detail']}: "
        f"{count(dom['params']['value'])} ({percent(dom['params']['share'])} of all)",
        f"most FLOPs: {dom['flops']['layer']} {dom['flops']['detail']}: "
        f"{si(dom['flops']['value'])}FLOPs per image ({percent(dom['flops']['share'])})",
        f"largest activations: {dom['activations']['layer']} {dom['activations']['detail']}: "
        f"{mb(dom['activations']['value'])} MB per image "
        f"({percent(dom['activations']['share'])} of the forward activations)",
    ]
    return lines + profile.notes


# --- the two modes ---------------------------------------------------------------------------
def analyze_one(cfg: DictConfig, device: torch.device) -> tuple[dict[str, Any], list[Item]]:
    """Detailed analysis of ``cfg.model``: (analysis.json contents, things to print/write)."""
    check_image_size(cfg, cfg.profile_device)
    batch = cfg.batch_size
    profile, memory = profile_and_memory(cfg, batch)
    measured = None
    if cfg.measure_step and device.type == "cuda":
        try:
            measured = measure_cuda_step(
                partial(build_on, cfg, device),
                build_optimizer(cfg),
                input_shape(cfg, batch),
                cfg.dataset.num_classes,
                device,
            )
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            measured = {"device": torch.cuda.get_device_name(device), "error": "out of memory"}
    machine = rl.machine(device, cfg.machine.peak_gflops, cfg.machine.bandwidth_gbs)
    roof = rl.roofline(profile.leaves, machine)
    roof_summary = rl.summary(roof, batch)
    min_size = search_min_size(cfg) if cfg.min_size else None

    machine_line = (
        f"machine ({device_description(device)}): peak {si(machine.peak_flops, 'FLOP/s')} "
        f"({machine.peak_flops_source}), bandwidth {si(machine.bandwidth, 'B/s')} "
        f"({machine.bandwidth_source}), ridge point {machine.ridge_point:.1f} FLOP/byte: "
        f"{roof_summary['compute_bound_layers']} layers compute-bound, "
        f"{roof_summary['memory_bound_layers']} bandwidth-bound; "
        f"{percent(roof_summary['compute_bound_time_share'])} of the roofline time "
        f"({1e3 * roof_summary['forward_seconds_per_batch']:.2f} ms per forward batch of "
        f"{batch}) is in compute-bound layers"
    )
    leaves = leaves_table(profile, {r.name: r for r in roof})
    items: list[Item] = [(blocks_table(profile), True)]
    items += [(line, True) for line in headline(profile)]
    items += [(leaves, cfg.leaves), (memory_table(memory, measured), True), (machine_line, True)]
    if min_size is not None:  # the answer min_size=true asks for, before the tables
        items.insert(0, (f"{profile.model}: {min_size.describe()}", True))

    analysis = {
        "command": "analyze",
        "model_target": cfg.model._target_,
        "image_size": cfg.dataset.image_size,
        "in_channels": cfg.dataset.in_channels,
        "batch_size": batch,
        **profile.to_dict(),
        "memory": memory.to_dict() | {"measured": measured},
        "machine": machine.to_dict() | {"description": device_description(device)},
        "roofline": {"layers": [r.to_dict() for r in roof], "summary": roof_summary},
        "min_size": min_size.to_dict() if min_size else None,
    }
    return analysis, items


def compare(cfg: DictConfig, names: list[str]) -> tuple[dict[str, Any], list[Item]]:
    """One row per model at ``dataset.image_size``; a model that cannot run there gets its
    error (and the minimum it needs) instead of numbers."""
    batch = cfg.batch_size
    rows: list[CompareRow] = []
    for name in names:
        model_cfg = with_model(cfg, name)
        target = model_cfg.model._target_
        min_size = search_min_size(model_cfg) if cfg.min_size else None
        try:
            check_image_size(model_cfg, cfg.profile_device)
        except ConfigError as err:
            rows.append(compare_row(name, target, None, None, min_size, error=str(err)))
            continue
        profile, memory = profile_and_memory(model_cfg, batch)
        rows.append(compare_row(name, target, profile, memory, min_size))
    table = compare_table(
        rows, cfg.dataset.image_size, batch, optimizer_name(build_optimizer(cfg))
    )
    analysis = {
        "command": "compare",
        "image_size": cfg.dataset.image_size,
        "in_channels": cfg.dataset.in_channels,
        "batch_size": batch,
        "compare": [r.to_dict() for r in rows],
    }
    return analysis, [(table, True)]


def _check_options(cfg: DictConfig) -> None:
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {cfg.batch_size!r}")
    if cfg.profile_device not in ("meta", "cpu"):
        raise ConfigError(f"profile_device is meta or cpu, got {cfg.profile_device!r}")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Analyse (or compare), print the tables, write analysis.json and analysis.md."""
    _check_options(cfg)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    names = list(cfg.models) if cfg.models else None
    if cfg.compare and not names:
        names = list(cfg.compare_models)
    analysis, items = compare(cfg, names) if names else analyze_one(cfg, device)
    analysis["config"] = OmegaConf.to_container(cfg, resolve=True)

    from rich.console import Console

    console = Console(width=max(160, Console().width))
    markdown: list[str] = ["# cnnlab-analyze\n"]
    for item, show in items:
        if isinstance(item, Table):
            if show:
                console.print(item.to_rich())
            markdown.append(item.to_markdown())
        else:
            if show:
                console.print(item, highlight=False, markup=False)
            markdown.append(f"- {item}")
    (out_dir / ANALYSIS_FILE).write_text(json.dumps(analysis, indent=2, default=str) + "\n")
    (out_dir / MARKDOWN_FILE).write_text("\n".join(markdown) + "\n")
    console.print(f"analysis:    {out_dir / ANALYSIS_FILE}", highlight=False)
    return analysis


@hydra.main(
    version_base="1.3", config_path=str(config_dir()), config_name="analyze"
)
@exit_on_user_error
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    """Console entry point; ``--compare`` is shorthand for the ``compare=true`` override."""
    refuse_pickled_rerun(sys.argv[1:])  # Hydra's --experimental-rerun unpickles a run's file
    sys.argv = ["compare=true" if arg == "--compare" else arg for arg in sys.argv]
    _hydra_main()


if __name__ == "__main__":
    main()
