"""Shared fixtures: configs composed through Hydra's compose API, as the entry point composes
them, with tiny real-data settings so a training run takes seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from torch import nn

from cnnlab.resolvers import project_root

CONF_DIR = project_root() / "conf"

# Enough data to learn something, little enough for a CPU test: 1 epoch of 2,000 images.
TINY = [
    "dataset.train_subset=2000",
    "dataset.val_size=500",
    "dataset.test_subset=1000",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]

# A command-line run that stops after two training batches: for what happens before and after
# training (errors, records), not for what it learns.
QUICK = [
    "dataset.train_subset=500",
    "dataset.val_size=200",
    "dataset.test_subset=200",
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def _mnist_found() -> bool:
    from cnnlab.data.sources import locate
    from cnnlab.errors import DatasetNotFoundError

    try:
        locate("mnist", None, download=False)
    except DatasetNotFoundError:
        return False
    return True


# MNIST has no system package: tests that read it skip, saying why, where the machine has none.
requires_mnist = pytest.mark.skipif(
    not _mnist_found(), reason="no MNIST on this machine: name its folder in CNNLAB_DATA_PATH"
)


@pytest.fixture
def no_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MNIST nowhere this run looks (no offline copy, no CNNLAB_DATA_PATH) and torchvision's
    download failing as it does without internet."""
    import dataclasses

    from cnnlab.data import sources

    spec = dataclasses.replace(sources.DATASETS["mnist"], offline_dirs=(tmp_path / "nowhere",))
    monkeypatch.setitem(sources.DATASETS, "mnist", spec)
    monkeypatch.delenv(sources.DATA_PATH_ENV, raising=False)

    def no_internet(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no internet")

    monkeypatch.setattr("torchvision.datasets.MNIST", no_internet)


def pytest_configure(config: pytest.Config) -> None:
    # The session decodes the datasets into a cache of its own (cnnlab.data.cache), never the
    # user's; the cnnlab-train and make subprocesses of the tests inherit it.
    os.environ["CNNLAB_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnnlab-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.pop("CNNLAB_CACHE_DIR", ""), ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The Optuna sweeper is an optional extra (it brings SciPy, +0.7 s on every start-up): its
    # tests say how to run them rather than fail where it is not installed.
    from cnnlab.runs.sweep import plugin_installed

    if plugin_installed("optuna"):
        return
    skip = pytest.mark.skip(reason="Optuna sweeper not installed: make test-optuna")
    for item in items:
        if "optuna" in item.keywords:
            item.add_marker(skip)


def compose_config(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    if output_dir is not None:  # ${hydra:runtime.output_dir} exists only inside a Hydra run
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """make_cfg(*overrides, tiny=True) -> a composed config writing into tmp_path."""

    def make(*overrides: str, tiny: bool = True) -> DictConfig:
        return compose_config((TINY if tiny else []) + list(overrides), tmp_path / "run")

    return make


def record_instances(monkeypatch: pytest.MonkeyPatch, cls: type) -> list:
    """A list that gets every ``cls`` object made during the test (a run builds them inside)."""
    made: list = []
    original_init = cls.__init__

    def remember(self: object, *args: object, **kwargs: object) -> None:
        original_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(cls, "__init__", remember)
    return made


def randomise_batch_norm(model: nn.Module) -> None:
    """Fresh BNs are the identity in eval mode (mean 0, var 1, weight 1, bias 0); make them not."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)


def run_command(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command line as a user would (a subprocess), capturing its text output."""
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **env},
    )
