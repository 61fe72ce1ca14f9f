"""``cnnlab-visualize``: look inside a trained model.

    cnnlab-visualize run_dir=outputs/runs/2025-01-01/12-00-00-000000
    cnnlab-visualize run_dir=... classes=[Pullover,Coat] per_class=4 layers=[features.0,features.3]
    cnnlab-visualize checkpoint=path/to/last.ckpt model=lenet      # a checkpoint without its run

For N test images of each chosen class it writes into its run directory (outputs/visualize/...):

- ``activations_<layer>.png``: one row per image, the input then the layer's channel maps
  (default layers: the first and second conv layers);
- ``filters_<layer>.png``: the first conv layer's filters;
- ``attribution.png``: input, saliency and Grad-CAM per image;
- the same figures in TensorBoard (``tensorboard/``) and a ``visualization.json`` summary.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import matplotlib
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnlab.analysis.attribution import (
    attribute,
    capture_outputs,
    conv_layer_names,
    last_spatial_module,
    module_by_name,
)
from cnnlab.devices import pick_device
from cnnlab.errors import USER_ERRORS, ConfigError
from cnnlab.resolvers import config_dir
from cnnlab.runs.results import RESULTS_FILE, read_results
from cnnlab.runs.rundir import find_checkpoint

matplotlib.use("Agg")  # files only: no display needed, safe on headless machines
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
from matplotlib.figure import Figure  # noqa: E402

SUMMARY_FILE = "visualization.json"
# Every grid cell is CELL_INCHES square at DPI, so a PNG is (rows * CELL_PX, cols * CELL_PX).
CELL_INCHES = 1.0
DPI = 72
CELL_PX = int(CELL_INCHES * DPI)
FILTER_COLUMNS = 8  # filters per row in the grid of a 1- or 3-channel first layer
LABEL_STYLE = {"fontsize": 6, "color": "white", "va": "top", "ha": "left"}
LABEL_BOX = {"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0}


# --- where the model comes from --------------------------------------------------------------
@dataclass
class Source:
    model_cfg: Any  # resolved model config (dict or DictConfig) with _target_
    dataset_cfg: Any
    checkpoint: Path
    run_dir: Path | None


def resolve_source(cfg: DictConfig) -> Source:
    """The model/dataset config and checkpoint from ``run_dir`` or ``checkpoint``; a checkpoint
    outside a run directory uses this command's own ``model`` and ``dataset`` config."""
    if cfg.run_dir:
        run_dir = Path(cfg.run_dir)
        results = run_dir / RESULTS_FILE
        if not results.is_file():
            raise ConfigError(
                f"{run_dir} has no {RESULTS_FILE}: give the directory of a finished training "
                "run (cnnlab-train prints it), or checkpoint=<file.ckpt> with model=<name>."
            )
        checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else find_checkpoint(run_dir)
    elif cfg.checkpoint:
        checkpoint = Path(cfg.checkpoint)
        guess = checkpoint.parent.parent  # <run_dir>/checkpoints/<file>.ckpt
        run_dir = guess if (guess / RESULTS_FILE).is_file() else None
    else:
        raise ConfigError(
            "say which model to visualise: run_dir=<training run directory> or "
            "checkpoint=<file.ckpt> (with model=<name> if it has no results.json beside it)."
        )
    if not checkpoint.is_file():
        raise ConfigError(f"checkpoint {checkpoint} does not exist")
    if run_dir is not None:
        config = (read_results(run_dir) or {}).get("config")
        if not config:
            raise ConfigError(f"{run_dir / RESULTS_FILE} has no config: the run did not finish")
        return Source(config["model"], config["dataset"], checkpoint, run_dir)
    return Source(cfg.model, cfg.dataset, checkpoint, None)


def load_model(model_cfg: Any, checkpoint: Path) -> nn.Module:
    """Build the model and load the LitClassifier checkpoint's ``model.*`` weights."""
    model = instantiate(model_cfg)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    weights = {}
    for key, value in state.items():
        if key.startswith("model."):  # LitClassifier.model; torch.compile adds _orig_mod.
            weights[key.removeprefix("model.").replace("_orig_mod.", "")] = value
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        details = " ".join(str(err).split())  # PyTorch lists the keys over many lines
        if len(details) > 300:
            details = details[:300] + "..."
        raise ConfigError(
            f"checkpoint {checkpoint} does not fit the model {model_cfg['_target_']} "
            f"({details}). Use the run_dir the checkpoint came from, or the model it was "
            "trained as (model=...)."
        ) from err
    return model.eval()


# --- which images ----------------------------------------------------------------------------
@dataclass
class Picked:
    images: torch.Tensor  # uint8 [N, 28, 28] as stored
    inputs: torch.Tensor  # the model's input [N, C, S, S]
    labels: torch.Tensor  # [N]
    indices: list[int]  # positions in the test split
    class_names: tuple[str, ...]  # of the whole dataset


def class_ids(wanted: list[Any], classes: tuple[str, ...], dataset: str) -> list[int]:
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    ids = []
    for name in wanted:
        key = str(name).lower()
        if key not in lookup:
            raise ConfigError(
                f"unknown class {name!r} for {dataset}; choose from: {', '.join(classes)} "
                "(e.g. classes=[Pullover,Coat])"
            )
        ids.append(lookup[key])
    return ids


def pick_images(dataset_cfg: Any, wanted: list[Any], per_class: int) -> Picked:
    """The first ``per_class`` test images of each wanted class, in the order asked for,
    transformed exactly as the training run fed them (resize, normalisation)."""
    datamodule = instantiate(dataset_cfg)
    datamodule.setup("test")
    images, labels = datamodule.splits["test"]
    picked: list[int] = []
    for cid in class_ids(wanted, datamodule.classes, datamodule.name):
        found = (labels == cid).nonzero().flatten()[:per_class].tolist()
        if len(found) < per_class:
            raise ConfigError(
                f"the test split has only {len(found)} images of class "
                f"{datamodule.classes[cid]!r}; lower per_class or dataset.test_subset"
            )
        picked += found
    index = torch.tensor(picked)
    inputs = datamodule.transform(images[index]).contiguous()
    return Picked(images[index], inputs, labels[index], picked, datamodule.classes)


# --- figures ---------------------------------------------------------------------------------
def _grid(rows: int, cols: int) -> tuple[Figure, Any]:
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(cols * CELL_INCHES, rows * CELL_INCHES),
        dpi=DPI,
        squeeze=False,
    )
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1, wspace=0.04, hspace=0.04)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


def _label(ax: Any, text: str) -> None:
    ax.text(0.03, 0.97, text, transform=ax.transAxes, bbox=LABEL_BOX, **LABEL_STYLE)


def activation_figure(
    picked: Picked, maps: torch.Tensor, layer: str, max_channels: int, predicted: list[int]
) -> Figure:
    """One row per image: the input, then the first ``max_channels`` maps of ``layer``."""
    channels = min(maps.shape[1], max_channels)
    fig, axes = _grid(len(picked.indices), 1 + channels)
    for row in range(len(picked.indices)):
        axes[row, 0].imshow(picked.inputs[row, 0], cmap="gray")
        true = picked.class_names[int(picked.labels[row])]
        _label(axes[row, 0], f"{true}\npred {picked.class_names[predicted[row]]}")
        for c in range(channels):
            axes[row, 1 + c].imshow(maps[row, c], cmap="viridis")
            if row == 0:
                _label(axes[row, 1 + c], f"{layer}\nch {c}" if c == 0 else f"ch {c}")
    return fig


def filter_figure(weight: torch.Tensor, max_channels: int) -> tuple[Figure, tuple[int, int]]:
    """A conv layer's filters: for 1 or 3 input channels a grid of filters (grey, or RGB),
    otherwise one row per filter and one column per input channel. Diverging colours: red
    positive, blue negative weights, white zero."""
    out_channels, in_channels = weight.shape[:2]
    if in_channels in (1, 3):
        cols = min(FILTER_COLUMNS, out_channels)
        rows = math.ceil(out_channels / cols)
        fig, axes = _grid(rows, cols)
        for i in range(out_channels):
            ax = axes[i // cols, i % cols]
            if in_channels == 1:
                limit = float(weight[i].abs().max()) or 1.0
                ax.imshow(weight[i, 0], cmap="bwr", vmin=-limit, vmax=limit)
            else:
                rgb = weight[i].permute(1, 2, 0)
                rgb = (rgb - rgb.min()) / (rgb.max() - rgb.min()).clamp_min(1e-12)
                ax.imshow(rgb)
            _label(ax, f"{i}")
        return fig, (rows, cols)
    rows, cols = min(out_channels, max_channels), min(in_channels, max_channels)
    fig, axes = _grid(rows, cols)
    for i in range(rows):
        for j in range(cols):
            limit = float(weight[i, j].abs().max()) or 1.0
            axes[i, j].imshow(weight[i, j], cmap="bwr", vmin=-limit, vmax=limit)
    return fig, (rows, cols)


def attribution_figure(
    picked: Picked,
    saliency: torch.Tensor,
    cam: torch.Tensor,
    targets: list[int],
    probs: list[float],
    layer: str,
) -> Figure:
    """Per image: the input, its saliency map, and Grad-CAM over the input."""
    fig, axes = _grid(len(picked.indices), 3)
    for row in range(len(picked.indices)):
        image = picked.inputs[row, 0]
        true = picked.class_names[int(picked.labels[row])]
        axes[row, 0].imshow(image, cmap="gray")
        _label(axes[row, 0], f"{true}")
        axes[row, 1].imshow(saliency[row], cmap="hot", vmin=0, vmax=1)
        _label(axes[row, 1], "saliency" if row == 0 else "")
        axes[row, 2].imshow(image, cmap="gray")
        axes[row, 2].imshow(cam[row], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        target = picked.class_names[targets[row]]
        _label(axes[row, 2], f"Grad-CAM {layer}\n{target} p={probs[row]:.2f}")
    return fig


# --- the command -----------------------------------------------------------------------------
def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def visualize(cfg: DictConfig) -> dict[str, Any]:
    """Write the figures and visualization.json into ``cfg.paths.output_dir``."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.per_class < 1:
        raise ConfigError(f"per_class must be >= 1, got {cfg.per_class}")
    if cfg.gradcam_target not in ("predicted", "label"):
        raise ConfigError(f"gradcam_target is predicted or label, got {cfg.gradcam_target!r}")
    source = resolve_source(cfg)
    device = pick_device(cfg.device)
    model = load_model(source.model_cfg, source.checkpoint).to(device)
    picked = pick_images(source.dataset_cfg, list(cfg.classes), cfg.per_class)
    inputs = picked.inputs.to(device)

    convs = conv_layer_names(model)
    layers = list(cfg.layers) if cfg.layers else convs[:2]
    try:
        for name in layers:
            module_by_name(model, name)
        cam_layer = cfg.gradcam_layer or last_spatial_module(model, inputs)
        module_by_name(model, cam_layer)
    except KeyError as err:
        raise ConfigError(f"{err.args[0]} (set layers=[...] / gradcam_layer=...)") from None

    logits, maps = capture_outputs(model, inputs, layers)
    probs = logits.softmax(dim=1)
    predicted = probs.argmax(dim=1).tolist()
    targets = picked.labels.to(device) if cfg.gradcam_target == "label" else None
    attribution = attribute(model, inputs, cam_layer, targets)
    target_list = attribution.targets.tolist()

    figures: dict[str, Figure] = {}
    grids: dict[str, list[int]] = {}
    for name in layers:
        out = maps[name].float().cpu()
        if out.dim() != 4:
            raise ConfigError(f"layer {name} outputs shape {list(out.shape)}, not feature maps")
        figures[f"activations_{_safe(name)}"] = activation_figure(
            picked, out, name, cfg.max_channels, predicted
        )
        grids[f"activations_{_safe(name)}"] = [
            len(picked.indices),
            1 + min(out.shape[1], cfg.max_channels),
        ]
    if convs and isinstance(module_by_name(model, convs[0]), nn.Conv2d):
        weight = module_by_name(model, convs[0]).weight.detach().float().cpu()
        fig, shape = filter_figure(weight, cfg.max_channels)
        figures[f"filters_{_safe(convs[0])}"] = fig
        grids[f"filters_{_safe(convs[0])}"] = list(shape)
    all_probs = attribution.logits.softmax(dim=1)
    target_probs = all_probs.gather(1, attribution.targets[:, None])[:, 0].tolist()
    figures["attribution"] = attribution_figure(
        picked,
        attribution.saliency.cpu(),
        attribution.cam.cpu(),
        target_list,
        target_probs,
        cam_layer,
    )
    grids["attribution"] = [len(picked.indices), 3]

    files = {}
    writer = None
    if cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tensorboard"))
        writer.add_images("inputs", picked.images[:, None].float() / 255.0, 0)
    for name, fig in figures.items():
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=DPI)
        files[name] = str(path)
        if writer is not None:
            writer.add_figure(name, fig, 0, close=False)
        plt.close(fig)
    if writer is not None:
        writer.close()

    names = picked.class_names
    summary = {
        "command": "visualize",
        "checkpoint": str(source.checkpoint),
        "run_dir": str(source.run_dir) if source.run_dir else None,
        "layers": layers,
        "gradcam_layer": cam_layer,
        "gradcam_target": cfg.gradcam_target,
        "images": [
            {
                "test_index": index,
                "true": names[int(label)],
                "predicted": names[pred],
                "probability": round(float(probs[i, pred]), 4),
            }
            for i, (index, label, pred) in enumerate(
                zip(picked.indices, picked.labels, predicted, strict=True)
            )
        ],
        "grids": grids,
        "files": files,
        "tensorboard_dir": str(out_dir / "tensorboard") if writer is not None else None,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    right = sum(1 for i in summary["images"] if i["true"] == i["predicted"])
    console.print(
        f"{len(summary['images'])} test images ({right} classified right), layers "
        f"{', '.join(summary['layers'])}, Grad-CAM on {summary['gradcam_layer']}",
        highlight=False,
    )
    for path in summary["files"].values():
        console.print(f"wrote       {path}", highlight=False)
    if summary["tensorboard_dir"]:
        console.print(f"TensorBoard: tensorboard --logdir {summary['tensorboard_dir']}")


@hydra.main(
    version_base="1.3", config_path=str(config_dir()), config_name="visualize"
)
def main(cfg: DictConfig) -> None:
    try:
        _print_summary(visualize(cfg))
    except USER_ERRORS as err:
        print(f"error: {err}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
