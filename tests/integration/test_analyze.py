"""cnnlab-analyze: per-layer FLOPs/parameters against hand counts, the AlexNet totals, the VGG
"8 blocks, 11 weight layers" question, minimum sizes, memory estimate, roofline, comparison."""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from cnnlab.analysis import roofline as rl
from cnnlab.analysis.layers import profile_model
from cnnlab.analysis.memory import (
    estimate_training_memory,
    measure_cuda_step,
    saved_activation_bytes,
)
from cnnlab.analysis.min_size import forward_error, min_size_report
from cnnlab.cli.analyze import build_on, run
from cnnlab.errors import ConfigError
from cnnlab.models import GoogLeNet, LeNet
from cnnlab.resolvers import project_root
from cnnlab.training.build import build_model
from conftest import run_command

CONF_DIR = project_root() / "conf"
# A fixed machine so that the tests do not spend time measuring this one.
GIVEN_MACHINE = ["machine.peak_gflops=1000", "machine.bandwidth_gbs=100"]


def compose_analyze(overrides: list[str], output_dir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("analyze", overrides=overrides)
    with open_dict(cfg):  # ${hydra:runtime.output_dir} exists only inside a Hydra run
        cfg.paths.output_dir = str(output_dir)
    return cfg


def meta_model(cfg: DictConfig) -> torch.nn.Module:
    return build_on(cfg, "meta")


def test_lenet_per_layer_flops_and_params_match_hand_counts(tmp_path: Path) -> None:
    cfg = compose_analyze(["model=lenet"], tmp_path)
    profile = profile_model(meta_model(cfg), (4, 1, 28, 28))
    layers = {s.name: s for s in profile.leaves}
    # (params, FLOPs per image = 2 per multiply-add: out elements x weights per output)
    expected = {
        "features.0": (6 * 1 * 5 * 5 + 6, 2 * (6 * 28 * 28) * (1 * 5 * 5)),
        "features.3": (16 * 6 * 5 * 5 + 16, 2 * (16 * 10 * 10) * (6 * 5 * 5)),
        "classifier.1": (400 * 120 + 120, 2 * 400 * 120),
        "classifier.3": (120 * 84 + 84, 2 * 120 * 84),
        "classifier.5": (84 * 10 + 10, 2 * 84 * 10),
    }
    for name, (params, flops) in expected.items():
        assert (layers[name].params, layers[name].flops_per_image) == (params, flops), name
    assert profile.total_params == 61_706 == sum(p for p, _ in expected.values())
    assert profile.total_flops_per_image == sum(f for _, f in expected.values())
    # Elementwise layers do no counted FLOPs; shapes and bytes come from the forward pass.
    assert layers["features.1"].flops_per_image == 0
    assert layers["features.2"].output_shape == [6, 14, 14]
    assert layers["features.0"].activation_bytes_per_image == 6 * 28 * 28 * 4
    assert layers["features.0"].param_bytes == 156 * 4
    conv1 = layers["features.0"]
    assert conv1.arithmetic_intensity == pytest.approx(
        conv1.flops / (156 * 4 + 4 * (1 * 28 * 28 + 6 * 28 * 28) * 4)
    )


def test_alexnet_totals_and_dominant_layer(tmp_path: Path) -> None:
    cfg = compose_analyze(["model=alexnet", "dataset.image_size=224"], tmp_path)
    profile = profile_model(meta_model(cfg), (2, 1, 224, 224))
    assert profile.total_params == 46_764_746
    dominant = profile.dominant()["params"]
    assert dominant["layer"] == "classifier.1"
    assert "in_features=6400, out_features=4096" in dominant["detail"]
    assert dominant["value"] == 6400 * 4096 + 4096
    assert dominant["share"] == pytest.approx(dominant["value"] / 46_764_746)
    by_type = profile.params_by_type()
    assert by_type["Linear"] > 10 * by_type["Conv2d"]  # the FC layers dominate the footprint


def test_vgg_prints_8_blocks_but_has_11_weight_layers(tmp_path: Path) -> None:
    cfg = compose_analyze(["model=vgg11", "dataset.image_size=224"], tmp_path)
    totals = profile_model(meta_model(cfg), (1, 1, 224, 224)).to_dict()["totals"]
    assert totals["blocks_with_params"] == 8  # 5 vgg_blocks + 3 FC layers
    assert totals["leaf_layers_with_params"] == 11  # 8 convs + 3 FC layers


@pytest.mark.parametrize(
    ("model", "size"),
    [("lenet", 28), ("alexnet", 224), ("vgg11", 224), ("googlenet", 96), ("resnet18", 96)],
)
def test_blocks_and_leaves_each_add_up_to_the_totals(tmp_path: Path, model: str, size: int) -> None:
    cfg = compose_analyze([f"model={model}", f"dataset.image_size={size}"], tmp_path)
    profile = profile_model(meta_model(cfg), (2, 1, size, size))
    for view in (profile.blocks, profile.leaves):
        assert sum(s.params for s in view) == profile.total_params
        assert sum(s.flops_per_image for s in view) == profile.total_flops_per_image
    # GoogLeNet iterates over b4's children itself: b4 is measured through them
    assert all(b.output_shape is not None for b in profile.blocks)


def test_googlenet_minimum_size_and_where_zero_breaks() -> None:
    report = min_size_report(lambda size: GoogLeNet(), in_channels=1)
    assert report.minimum == 1
    assert report.failing_module == "b1.0.0" and report.failing_type == "Conv2d"


def test_lenet_minimum_size_names_the_vanishing_stage() -> None:
    report = min_size_report(lambda size: LeNet(input_size=size), in_channels=1)
    assert report.minimum == 12
    assert report.failing_module == "features.5" and report.failing_type == "AvgPool2d"
    assert "shrinks to nothing" in report.constructor_error


@pytest.mark.parametrize("size", [11, 12, 40])
def test_meta_and_cpu_agree_on_what_runs(tmp_path: Path, size: int) -> None:
    cfg = compose_analyze(["model=lenet"], tmp_path)
    build = partial(build_model, cfg)
    assert (forward_error(build, 1, size, "meta") is None) == (
        forward_error(build, 1, size, "cpu") is None
    )


def test_too_small_image_names_the_minimum(tmp_path: Path) -> None:
    cfg = compose_analyze(["dataset.image_size=8", *GIVEN_MACHINE], tmp_path)
    with pytest.raises(ConfigError, match=r"smallest input this model accepts is 12x12"):
        run(cfg)


def test_training_memory_parts() -> None:
    with torch.device("meta"):
        model = LeNet()
    param_bytes = 61_706 * 4
    sgd = estimate_training_memory(model, partial(torch.optim.SGD, lr=0.1), (8, 1, 28, 28))
    assert sgd.param_bytes == sgd.grad_bytes == param_bytes
    assert sgd.optimizer_state_bytes == 0
    momentum = partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    assert estimate_training_memory(model, momentum, (8, 1, 28, 28)).optimizer_state_bytes == (
        param_bytes
    )
    adam = estimate_training_memory(model, partial(torch.optim.Adam), (8, 1, 28, 28))
    # exp_avg + exp_avg_sq per parameter, plus one scalar step counter per tensor (10 tensors)
    assert 2 * param_bytes <= adam.optimizer_state_bytes <= 2 * param_bytes + 10 * 8
    lbfgs = estimate_training_memory(model, partial(torch.optim.LBFGS), (8, 1, 28, 28))
    assert lbfgs.optimizer_state_bytes > 10 * param_bytes and "scaled" in lbfgs.optimizer_note
    assert sgd.total_bytes == 2 * param_bytes + sgd.activation_bytes


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_measured_cuda_step_matches_the_static_estimate() -> None:
    factory = partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    with torch.device("meta"):
        estimate = estimate_training_memory(LeNet(), factory, (64, 1, 28, 28))
    measured = measure_cuda_step(LeNet, factory, (64, 1, 28, 28), 10, torch.device("cuda"))
    static = estimate.param_bytes + estimate.grad_bytes + estimate.optimizer_state_bytes
    # 10 parameter tensors, each with a gradient and a momentum buffer, rounded up to 512 bytes
    assert static <= measured["after_step_bytes"] <= static + 30 * 512
    # at the end of the forward pass the parameters and the saved activations are all held
    assert measured["peak_bytes"] >= estimate.param_bytes + estimate.activation_bytes // 2


def test_saved_activations_grow_with_the_batch() -> None:
    with torch.device("meta"):
        model = LeNet()
    small, large = (saved_activation_bytes(model, (b, 1, 28, 28)) for b in (16, 32))
    assert small > 16 * 6 * 28 * 28 * 4  # at least the first conv's output per image
    assert large == pytest.approx(2 * small, rel=1e-3)


def test_fc_layers_are_bandwidth_bound_alone_and_compute_bound_in_a_batch(
    tmp_path: Path,
) -> None:
    cfg = compose_analyze(["model=alexnet", "dataset.image_size=224"], tmp_path)
    machine = rl.machine(torch.device("cpu"), peak_gflops=1000, bandwidth_gbs=100)
    assert machine.ridge_point == pytest.approx(10.0)
    model = meta_model(cfg)

    def bounds(batch: int) -> dict[str, str]:
        rows = rl.roofline(profile_model(model, (batch, 1, 224, 224)).leaves, machine)
        return {r.name: r.bound for r in rows}

    one, many = bounds(1), bounds(256)
    assert one["classifier.1"] == "memory"  # 26M weights read for one image
    assert many["classifier.1"] == "compute"  # read once for 256 images
    assert one["features.3"] == many["features.3"] == "compute"  # conv: weights reused anyway
    assert many["features.1"] == "memory"  # ReLU: no counted FLOPs


def test_machine_is_measured_when_not_given() -> None:
    machine = rl.machine(torch.device("cpu"))
    assert machine.peak_flops > 1e8 and machine.bandwidth > 1e8
    assert machine.peak_flops_source == machine.bandwidth_source == "measured"


def test_run_writes_analysis_json_and_markdown(tmp_path: Path) -> None:
    cfg = compose_analyze(["min_size=true", "batch_size=32", *GIVEN_MACHINE], tmp_path)
    analysis = run(cfg)
    written = json.loads((tmp_path / "analysis.json").read_text())
    assert written["totals"]["params"] == analysis["totals"]["params"] == 61_706
    assert [b["name"] for b in written["blocks"]][:2] == ["features.0", "features.1"]
    assert len(written["leaves"]) == 12 and len(written["roofline"]["layers"]) == 12
    assert written["dominant"]["params"]["layer"] == "classifier.1"
    assert written["memory"]["batch_size"] == 32 and written["memory"]["activation_bytes"] > 0
    assert written["min_size"]["minimum"] == 12
    assert written["machine"]["peak_flops_source"] == "given"
    markdown = (tmp_path / "analysis.md").read_text()
    assert markdown.splitlines()[2].startswith("- LeNet: ")  # min_size's answer comes first
    assert "top-level blocks" in markdown and "every leaf layer" in markdown
    assert "| classifier.1 | Linear |" in markdown


def test_compare_lists_every_requested_model(tmp_path: Path) -> None:
    names = ["alexnet", "vgg11", "googlenet", "resnet18"]
    cfg = compose_analyze(
        [f"models=[{','.join(names)}]", "dataset.image_size=224", *GIVEN_MACHINE], tmp_path
    )
    rows = {r["model"]: r for r in run(cfg)["compare"]}
    assert list(rows) == names
    assert all(r["params"] and r["flops_per_image"] and r["param_bytes"] for r in rows.values())
    assert rows["alexnet"]["params"] == 46_764_746
    # GoogLeNet: global average pooling instead of 4096-wide FC layers
    assert rows["googlenet"]["fc_params"] < rows["alexnet"]["fc_params"] / 1000
    assert rows["vgg11"]["flops_per_image"] > 5 * rows["alexnet"]["flops_per_image"]
    markdown = (tmp_path / "analysis.md").read_text()
    assert all(f"| {name} |" in markdown for name in names)


def test_compare_reports_a_model_too_big_for_the_image(tmp_path: Path) -> None:
    cfg = compose_analyze(["models=[lenet,alexnet]", *GIVEN_MACHINE], tmp_path)  # 28 px
    lenet, alexnet = run(cfg)["compare"]
    assert lenet["params"] == 61_706 and lenet["error"] is None
    assert alexnet["params"] is None and "smallest input this model accepts" in alexnet["error"]


def test_unknown_model_in_compare(tmp_path: Path) -> None:
    cfg = compose_analyze(["models=[lenet,alexnett]", *GIVEN_MACHINE], tmp_path)
    with pytest.raises(ConfigError, match="unknown model 'alexnett'.*alexnet"):
        run(cfg)


def test_module_entry_point_with_compare_flag(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "cnnlab.cli.analyze",
        "--compare",
        "compare_models=[lenet,googlenet]",
        *GIVEN_MACHINE,
        f"hydra.run.dir={tmp_path}",
    ]
    done = run_command(command, COLUMNS="200")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "analysis.json").read_text())["compare"]
    assert [r["model"] for r in rows] == ["lenet", "googlenet"]
    assert "googlenet" in done.stdout


def test_module_entry_point_user_error_is_one_paragraph(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "cnnlab.cli.analyze", "model=alexnet"]
    command.append(f"hydra.run.dir={tmp_path}")
    done = run_command(command)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert "Set dataset.image_size=" in done.stdout
