"""``cnnlab-visualize``: look inside a trained model.

    cnnlab-visualize run_dir=outputs/runs/2025-01-01/12-00-00-000000
    cnnlab-visualize run_dir=... classes=[Pullover,Coat] per_class=4 layers=[features.0,features.3]
    cnnlab-visualize checkpoint=path/to/last.ckpt model=lenet      # a checkpoint without its run

The model and data config are rebuilt from conf/ and the run's recorded overrides (results.json,
or the checkpoint's ``cnnlab`` entry; cnnlab.runs.rebuild), as cnnlab-eval does: nothing stored in
the run directory chooses what gets instantiated.

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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import matplotlib
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from cnnlab.analysis.attribution import (
    attribute,
    capture_outputs,
    conv_layer_names,
    last_spatial_module,
    module_by_name,
)
from cnnlab.devices import pick_device
from cnnlab.errors import ConfigError, exit_on_user_error
from cnnlab.resolvers import config_dir

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
    run_cfg: DictConfig  # the run's config, rebuilt from conf/ (model and dataset are used)
    checkpoint_path: Path
    checkpoint: dict[str, Any]
    run_dir: Path | None
    # Where the rebuilt config differs from the one the run recorded (cnnlab.runs.rebuild).
    drift: list[str]


def resolve_source(cfg: DictConfig) -> Source:
    """The model/dataset config and checkpoint of ``run_dir=`` or ``checkpoint=``.

    The config is rebuilt from conf/ and the run's recorded overrides (results.json, or the
    checkpoint's ``cnnlab`` entry), exactly as cnnlab-eval does: nothing stored in a run
    directory chooses what gets instantiated. A checkpoint that records no run uses this
    command's own ``model`` and ``dataset`` config."""
    from cnnlab.runs.rebuild import config_drift, rebuild_config, run_source

    if not cfg.run_dir and not cfg.checkpoint:
        raise ConfigError(
            "say which model to visualise: run_dir=<training run directory> or "
            "checkpoint=<file.ckpt> (with model=<name> if it has no results.json beside it)."
        )
    source = run_source(cfg.run_dir, cfg.checkpoint, ckpt_key="checkpoint", bare=True)
    if source.overrides is None:
        return Source(cfg, source.checkpoint_path, source.checkpoint, None, [])
    run_cfg = rebuild_config(source.overrides, source=source.overrides_from)
    drift = config_drift(run_cfg, source.recorded_config)
    return Source(run_cfg, source.checkpoint_path, source.checkpoint, source.run_dir, drift)


def load_model(source: Source) -> nn.Module:
    """The run's model (its config checked first) with the checkpoint's weights, in eval mode."""
    from cnnlab.training.build import build_checked_model
    from cnnlab.training.evaluate import load_weights

    model = build_checked_model(source.run_cfg)
    load_weights(model, source.checkpoint, source.checkpoint_path)
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


def pick_images(run_cfg: DictConfig, wanted: list[Any], per_class: int) -> Picked:
    """The first ``per_class`` test images of each wanted class, in the order asked for,
    transformed exactly as the training run fed them (resize, normalisation)."""
    from cnnlab.training.build import build_datamodule
    from cnnlab.training.evaluate import full_test_split

    # The whole test split: the run's test subset is a prefix of it, so the images it had come
    # first, and a class the subset holds few of still has enough.
    datamodule = build_datamodule(full_test_split(run_cfg))
    datamodule.setup("test")
    images, labels = datamodule.splits["test"]
    picked: list[int] = []
    for cid in class_ids(wanted, datamodule.classes, datamodule.name):
        found = (labels == cid).nonzero().flatten()[:per_class].tolist()
        if len(found) < per_class:
            raise ConfigError(
                f"the test split has only {len(found)} images of class "
                f"{datamodule.classes[cid]!r}; lower per_class"
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
def check_options(cfg: DictConfig) -> None:
    """This command's own keys, before anything is read or built."""
    from cnnlab.training.checks import check_integer, check_switch

    per_class = cfg.per_class
    if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1:
        raise ConfigError(
            f"per_class must be >= 1 (an integer: the test images shown per class), got "
            f"{per_class!r}"
        )
    check_integer("max_channels", cfg.max_channels, 1, None, "the channel maps shown per layer")
    if cfg.gradcam_target not in ("predicted", "label"):
        raise ConfigError(f"gradcam_target is predicted or label, got {cfg.gradcam_target!r}")
    check_switch("tensorboard", cfg.tensorboard)
    # A single word stays a string, and a string is a list of its letters ('P', 'u', ...).
    for key, can_be_null in (("classes", False), ("layers", True)):
        value = cfg.get(key)
        if value is None and can_be_null:
            continue
        if not isinstance(value, ListConfig) or len(value) == 0:
            raise ConfigError(
                f"{key} must be a non-empty list{' or null' if can_be_null else ''}, got "
                f"{value!r}; e.g. {key}=[{'Pullover,Coat' if key == 'classes' else 'features.0'}]."
            )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def visualize(cfg: DictConfig) -> dict[str, Any]:
    """Write the figures and visualization.json into ``cfg.paths.output_dir``."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_options(cfg)
    source = resolve_source(cfg)
    device = pick_device(cfg.device)
    model = load_model(source).to(device)
    picked = pick_images(source.run_cfg, list(cfg.classes), cfg.per_class)
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
        "checkpoint": str(source.checkpoint_path),
        "run_dir": str(source.run_dir) if source.run_dir else None,
        # Where conf/ + the run's overrides no longer give the config the run recorded: the
        # figures are then of a model built differently from the one that was trained.
        "config_drift": source.drift,
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
    if summary["config_drift"]:
        shown = "; ".join(summary["config_drift"][:5])
        console.print(
            f"[bold]warning[/bold]: the config rebuilt from conf/ and the run's overrides differs "
            f"from the one the run recorded ({shown}). conf/ has changed since the run, or the "
            f"run recorded no overrides: these figures may be of another model.",
            highlight=False,
        )
    for path in summary["files"].values():
        console.print(f"wrote       {path}", highlight=False)
    if summary["tensorboard_dir"]:
        console.print(f"TensorBoard: tensorboard --logdir {summary['tensorboard_dir']}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="visualize")
@exit_on_user_error
def _main(cfg: DictConfig) -> None:
    _print_summary(visualize(cfg))


def main() -> None:
    """The ``cnnlab-visualize`` console script."""
    from cnnlab.runs.rebuild import refuse_pickled_rerun

    refuse_pickled_rerun(sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
