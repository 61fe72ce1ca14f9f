"""Every config that ships composes through Hydra and instantiates."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cnnlab.resolvers import project_root
from cnnlab.training.trainer import build_loggers
from conftest import CONF_DIR, compose_config

ROOT = project_root()


def names(group: str, folder: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (folder / group).glob("*.yaml"))


@functools.cache
def course_image_size(model: str) -> int:
    second_line = (CONF_DIR / "model" / f"{model}.yaml").read_text().splitlines()[1]
    match = re.fullmatch(r"# course image size: (\d+)", second_line)
    assert match, f"conf/model/{model}.yaml: line 2 must be '# course image size: N'"
    return int(match.group(1))


def test_every_group_has_options() -> None:
    for group in ("model", "dataset", "optimizer", "scheduler", "ablation", "trainer", "logger"):
        assert names(group), f"conf/{group}/ is empty"
    assert {"sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw", "lbfgs"} <= set(
        names("optimizer")
    )


def test_default_run_is_the_lenet_recipe() -> None:
    cfg = compose_config([])
    assert cfg.model._target_ == "cnnlab.models.lenet.LeNet"
    assert (cfg.optimizer._target_, cfg.optimizer.lr) == ("torch.optim.SGD", 0.9)
    assert (cfg.dataset.name, cfg.dataset.batch_size, cfg.trainer.max_epochs) == (
        "fashion_mnist",
        256,
        10,
    )
    assert (cfg.model.activation, cfg.model.pool, cfg.model.init) == ("sigmoid", "avg", "xavier")


@pytest.mark.parametrize("model", names("model"))
def test_model_config_instantiates(model: str) -> None:
    size = course_image_size(model)
    cfg = compose_config([f"model={model}", f"dataset.image_size={size}"])
    net = instantiate(cfg.model)
    assert isinstance(net, torch.nn.Module)
    assert sum(p.numel() for p in net.parameters()) > 0


def _ablation_model(ablation: str) -> str:
    """The first model config (cheapest first) that already has every model.* key the ablation
    sets: an ablation only switches existing knobs."""
    keys = set(OmegaConf.load(CONF_DIR / "ablation" / f"{ablation}.yaml").get("model") or {})
    by_cost = sorted(names("model"), key=lambda m: (course_image_size(m), m))
    for model in ["lenet", *by_cost]:
        if keys <= set(OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml")):
            return model
    raise AssertionError(f"no model config has all the keys of ablation {ablation}: {keys}")


@pytest.mark.parametrize("ablation", names("ablation"))
def test_ablation_applies(ablation: str) -> None:
    model = _ablation_model(ablation)
    cfg = compose_config(
        [
            f"model={model}",
            f"dataset.image_size={course_image_size(model)}",
            f"ablation=[{ablation}]",
        ]
    )
    wanted = OmegaConf.load(CONF_DIR / "ablation" / f"{ablation}.yaml")
    for group, values in wanted.items():
        for key, value in values.items():
            assert cfg[group][key] == value, f"{ablation}: {group}.{key} not applied"
    instantiate(cfg.model)
    instantiate(cfg.dataset)


def test_ablations_combine_and_win_over_experiment() -> None:
    cfg = compose_config(["experiment=lenet", "ablation=[max_pool,relu,batch_norm]"])
    assert (cfg.model.pool, cfg.model.activation, cfg.model.batch_norm) == ("max", "relu", True)


@pytest.mark.parametrize("optimizer", names("optimizer"))
def test_optimizer_config_instantiates(optimizer: str) -> None:
    cfg = compose_config([f"optimizer={optimizer}"])
    factory = instantiate(cfg.optimizer)
    opt = factory(torch.nn.Linear(2, 2).parameters())
    assert isinstance(opt, torch.optim.Optimizer)


@pytest.mark.parametrize("scheduler", names("scheduler"))
def test_scheduler_config_instantiates(scheduler: str) -> None:
    cfg = compose_config([f"scheduler={scheduler}"])
    if not cfg.scheduler:
        assert scheduler == "none"
        return
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    assert isinstance(instantiate(cfg.scheduler)(opt), torch.optim.lr_scheduler.LRScheduler)


@pytest.mark.parametrize("dataset", names("dataset"))
def test_dataset_config_instantiates(dataset: str) -> None:
    cfg = compose_config([f"dataset={dataset}"])
    assert isinstance(instantiate(cfg.dataset), L.LightningDataModule)


@pytest.mark.parametrize("trainer", names("trainer"))
def test_trainer_config_builds_a_trainer(trainer: str, tmp_path: Path) -> None:
    cfg = compose_config([f"trainer={trainer}"], tmp_path)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        pytest.skip(f"trainer={trainer} needs a GPU (test_distributed.py builds it on CPU)")
    loggers = build_loggers(cfg)
    trainer_obj = L.Trainer(**OmegaConf.to_container(cfg.trainer), logger=loggers)
    assert trainer_obj.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("experiment", names("", ROOT / "experiments"))
def test_experiment_composes_and_instantiates(experiment: str) -> None:
    cfg = compose_config([f"experiment={experiment}"])
    instantiate(cfg.model)
    instantiate(cfg.dataset)
    instantiate(cfg.optimizer)


def test_unknown_experiment_lists_the_choices() -> None:
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="lenet"):
        compose_config(["experiment=no_such_recipe"])
