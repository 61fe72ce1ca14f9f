"""cnnlab.runs.rebuild: a run's config from conf/ and its overrides, with every override that
could choose what gets instantiated refused."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from cnnlab.errors import ConfigError
from cnnlab.runs.rebuild import check_overrides, config_drift, rebuild_config

SAFE = [
    "dataset.train_subset=2000",
    "dataset.test_subset=null",
    "ablation=[relu,max_pool]",
    "experiment=lenet_improved",
    "model=lenet_improved",
    "optimizer=adam",
    "optimizer.lr=0.001",
    "++trainer.limit_train_batches=20",
    "dataset.root=/data/fashion-mnist",
    "seed=3",
    "hparams_search=lenet_optuna",  # the sweeper's own settings: dropped, not composed
]


def test_plain_overrides_rebuild_the_runs_config() -> None:
    cfg = rebuild_config(SAFE)
    assert cfg.model._target_ == "cnnlab.models.lenet.LeNet"
    assert cfg.model.activation == "relu" and cfg.model.pool == "max"
    assert cfg.optimizer.lr == 0.001 and cfg.dataset.train_subset == 2000
    assert "hydra" not in cfg


@pytest.mark.parametrize(
    "override",
    [
        "model._target_=os.getcwd",
        "+model.activation={_target_:os.getcwd}",
        "model.activation={_partial_:true}",
        "+dataset._args_=[1]",
        "~model._recursive_",
        "+optimizer._convert_=all",
        "hydra.callbacks.x._target_=os.getcwd",
        "hydra.run.dir=/tmp/x",
        "hydra/launcher=slurm",
        "model=../../../../tmp/evil",  # a YAML file outside conf/, _target_ and all
        "ablation=[relu,../../elsewhere/x]",
        "dataset@model=mnist",  # the dataset's _target_ at the model's place
        "model.activation=${dataset}",
        "+x=${oc.decode:'{a: 1}'}",
        "optimizer.lr=0.1,0.2",
        "model=",
    ],
)
def test_refused(override: str) -> None:
    with pytest.raises(ConfigError) as info:
        rebuild_config([*SAFE[:2], override], source="results.json")
    message = str(info.value)
    assert repr(override) in message and "results.json" in message and "\n" not in message


def test_not_a_list_of_strings_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a list of strings"):
        check_overrides({"model": "lenet"})
    with pytest.raises(ConfigError, match="not a list of strings"):
        check_overrides(["seed=1", 2])


def test_an_option_this_checkout_lacks_is_one_paragraph() -> None:
    with pytest.raises(ConfigError, match="cannot be rebuilt") as info:
        rebuild_config(["model=no_such_model"])
    assert "\n" not in str(info.value)


def test_drift_names_what_differs_from_the_recorded_config() -> None:
    cfg = rebuild_config(["ablation=[relu]"])
    recorded = OmegaConf.to_container(cfg, resolve=False)
    assert config_drift(cfg, recorded) == []  # unresolved values (${...}) are not compared
    recorded["model"]["activation"] = "tanh"
    recorded["dataset"]["root"] = "/elsewhere"  # where the data lies: no drift
    assert config_drift(cfg, recorded) == ["model.activation: 'tanh' in the run, 'relu' now"]
