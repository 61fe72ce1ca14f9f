"""cnnlab-visualize on a tiny trained LeNet: grids of the expected size, TensorBoard images,
checkpoint lookup, clear errors; saliency and Grad-CAM on models whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from cnnlab.analysis.attribution import attribute, last_spatial_module
from cnnlab.cli.train import run
from cnnlab.cli.visualize import CELL_PX, visualize
from cnnlab.errors import ConfigError
from cnnlab.resolvers import project_root
from conftest import TINY, compose_config


def compose_visualize(overrides: list[str], output_dir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(project_root() / "conf"), version_base="1.3"):
        cfg = compose("visualize", overrides=overrides)
    with open_dict(cfg):  # ${hydra:runtime.output_dir} exists only inside a Hydra run
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeNet (ReLU, max-pool) trained for one epoch on 2,000 images: a few seconds."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    cfg = compose_config(
        [*TINY, "ablation=[relu,max_pool]", "optimizer.lr=0.1", "dataset.batch_size=64"], run_dir
    )
    assert run(cfg)["status"] == "ok"
    return run_dir


def png_shape(path: str | Path) -> tuple[int, int]:
    return matplotlib.image.imread(path).shape[:2]


def test_writes_grids_of_the_expected_size(trained_run: Path, tmp_path: Path) -> None:
    cfg = compose_visualize(
        [f"run_dir={trained_run}", "classes=[Pullover,Coat]", "per_class=3"], tmp_path
    )
    summary = visualize(cfg)
    rows = 2 * 3  # one row per image
    assert summary["layers"] == ["features.0", "features.3"]  # the first two conv layers
    # the input, then one column per channel: LeNet's convs have 6 and 16 channels
    assert png_shape(tmp_path / "activations_features.0.png") == (rows * CELL_PX, 7 * CELL_PX)
    assert png_shape(tmp_path / "activations_features.3.png") == (rows * CELL_PX, 17 * CELL_PX)
    assert png_shape(tmp_path / "filters_features.0.png") == (CELL_PX, 6 * CELL_PX)
    assert png_shape(tmp_path / "attribution.png") == (rows * CELL_PX, 3 * CELL_PX)
    assert summary["grids"]["activations_features.3"] == [rows, 17]
    assert [i["true"] for i in summary["images"]] == ["Pullover"] * 3 + ["Coat"] * 3
    assert summary["gradcam_layer"] == "features"  # LeNet's last 2-D map: after the 2nd pool

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"inputs", "activations_features.0", "filters_features.0", "attribution"} <= set(
        events.Tags()["images"]
    )
    assert json.loads((tmp_path / "visualization.json").read_text())["files"] == summary["files"]


def test_checkpoint_and_options(trained_run: Path, tmp_path: Path) -> None:
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    cfg = compose_visualize(
        [
            f"checkpoint={checkpoint}",
            "classes=[Sneaker]",
            "per_class=2",
            "layers=[features.3]",
            "max_channels=4",
            "gradcam_layer=features.3",
            "gradcam_target=label",
            "tensorboard=false",
        ],
        tmp_path,
    )
    summary = visualize(cfg)
    assert summary["run_dir"] == str(trained_run)  # found from the checkpoint's location
    assert png_shape(tmp_path / "activations_features.3.png") == (2 * CELL_PX, 5 * CELL_PX)
    assert summary["gradcam_layer"] == "features.3" and summary["tensorboard_dir"] is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("classes=[Sweater]", "unknown class 'Sweater'.*Pullover"),
        ("layers=[features.9]", "no layer 'features.9'.*features.0, features.3"),
        ("per_class=0", "per_class must be >= 1"),
    ],
)
def test_user_errors(trained_run: Path, tmp_path: Path, override: str, message: str) -> None:
    cfg = compose_visualize([f"run_dir={trained_run}", override], tmp_path)
    with pytest.raises(ConfigError, match=message):
        visualize(cfg)


def test_needs_a_run_or_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run_dir=.*checkpoint="):
        visualize(compose_visualize([], tmp_path))
    with pytest.raises(ConfigError, match="no results.json"):
        visualize(compose_visualize([f"run_dir={tmp_path}"], tmp_path))


def test_saliency_marks_the_only_pixel_the_model_reads() -> None:
    linear = nn.Linear(8 * 8, 2)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[1, 3 * 8 + 5] = 1.0  # class 1's score is pixel (3, 5)
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Flatten(), linear)
    x = torch.rand(2, 1, 8, 8)
    result = attribute(model, x, "0", targets=torch.tensor([1, 1]))
    for saliency in result.saliency:
        assert divmod(int(saliency.argmax()), 8) == (3, 5)
        assert saliency.max() == 1.0 and saliency.sum() == 1.0


def test_grad_cam_points_at_the_evidence() -> None:
    # Class 1 scores the mean of a conv map; the image is bright in its top-left quarter only.
    conv = nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        conv.weight.fill_(1 / 9)
        conv.bias.zero_()
    head = nn.Linear(1, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        head.bias.zero_()
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    x = torch.zeros(1, 1, 16, 16)
    x[:, :, :8, :8] = 1.0
    assert last_spatial_module(model, x) == "1"  # the ReLU map, before the pooling to 1x1
    cam = attribute(model, x, "1").cam[0]
    assert cam[:8, :8].mean() > 0.5 and cam[12:, 12:].max() == 0.0
