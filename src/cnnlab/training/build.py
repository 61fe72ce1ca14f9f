"""From config to objects: the model, the data, the optimizer, the LitClassifier of a run.

Each builder checks what it builds from and turns a bad value into a ConfigError that names the
key and what to do, before anything trains.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

from cnnlab.analysis.min_size import forward_error, min_input_size
from cnnlab.errors import ConfigError
from cnnlab.training.lit import LitClassifier


def check_arguments(group: str, node: DictConfig) -> None:
    """Every key of a config node with a ``_target_`` is an argument of that target, or a
    ConfigError names the key, the valid keys and the closest one (a typo such as
    ``+optimizer.learningrate=0.1`` would otherwise fail deep inside training)."""
    try:
        target = get_object(str(node._target_))
        parameters = inspect.signature(target).parameters.values()
    except (ImportError, AttributeError, TypeError, ValueError):
        return  # instantiate reports a target that cannot be found
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    # The first argument of an optimizer (params) or scheduler (optimizer) is given by the loop.
    given_by_loop = {"self", "params", "optimizer"}
    valid = [p.name for p in parameters if p.name not in given_by_loop]
    # Abbreviated argument names, spelled out, so that a long spelling finds them.
    aliases = {"learning_rate": "lr", "learningrate": "lr"}
    spelled = {k: v for k, v in aliases.items() if v in valid} | {name: name for name in valid}
    for key in node:
        if str(key).startswith("_") or key in valid:
            continue
        closest = difflib.get_close_matches(str(key).lower(), list(spelled), n=1)
        hint = f" Did you mean {group}.{spelled[closest[0]]}?" if closest else ""
        raise ConfigError(
            f"{group}.{key} is not an argument of {node._target_}.{hint} Its arguments: "
            f"{', '.join(valid)}."
        )


def build_model(cfg: DictConfig, image_size: int | None = None) -> torch.nn.Module:
    """Instantiate ``cfg.model``, optionally for another image size (models whose classifier
    width depends on it read ``dataset.image_size`` through interpolation)."""
    model_cfg = cfg.model
    check_arguments("model", model_cfg)
    if image_size is not None:
        cfg = cfg.copy()
        cfg.dataset.image_size = image_size
        model_cfg = cfg.model
    try:
        return instantiate(model_cfg)
    except Exception as err:  # Hydra wraps constructor errors; show the constructor's words
        cause = err.__cause__ or err
        raise ConfigError(f"cannot build model {cfg.model._target_}: {cause}") from err


def check_image_size(cfg: DictConfig, device: str | torch.device = "meta") -> None:
    """Make sure the model accepts ``dataset.image_size``; if not, name the minimum.

    Shapes only, by default on the meta device: instant even for VGG, and the same errors as on
    the CPU."""
    size, channels = cfg.dataset.image_size, cfg.dataset.in_channels
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"dataset.image_size must be a positive integer, got {size!r}")
    error = forward_error(lambda s: build_model(cfg, s), channels, size, device=device)
    if error is None:
        return
    try:
        minimum = min_input_size(lambda s: build_model(cfg, s), channels, device=device)
        hint = (
            f"the smallest input this model accepts is {minimum}x{minimum}. "
            f"Set dataset.image_size={minimum} or larger."
        )
    except ValueError:
        hint = "no input size up to 512 works either: check the model's knobs."
    raise ConfigError(
        f"model {cfg.model._target_} cannot run on {size}x{size} images: {hint} "
        f"(First error: {error})"
    )


def build_checked_model(cfg: DictConfig) -> torch.nn.Module:
    """The run's model, after checking that it accepts the run's image size."""
    check_image_size(cfg)
    return build_model(cfg)


def build_optimizer(cfg: DictConfig) -> Any:
    """``cfg.optimizer`` as a factory: ``factory(parameters) -> torch.optim.Optimizer``."""
    lr = cfg.optimizer.get("lr")
    if not isinstance(lr, int | float) or isinstance(lr, bool) or lr <= 0:
        raise ConfigError(f"optimizer.lr must be a positive number, got {lr!r}")
    check_arguments("optimizer", cfg.optimizer)
    try:
        return instantiate(cfg.optimizer)
    except Exception as err:
        raise ConfigError(f"bad optimizer config: {err.__cause__ or err}") from err


def build_datamodule(cfg: DictConfig) -> Any:
    check_arguments("dataset", cfg.dataset)
    try:
        return instantiate(cfg.dataset)
    except Exception as err:
        raise ConfigError(f"bad dataset config: {err.__cause__ or err}") from err


def build_scheduler(cfg: DictConfig) -> Any:
    """``cfg.scheduler`` as a factory ``factory(optimizer)``, or None (scheduler=none)."""
    if not cfg.get("scheduler"):
        return None
    check_arguments("scheduler", cfg.scheduler)
    return instantiate(cfg.scheduler)


def build_lit(cfg: DictConfig, model: torch.nn.Module) -> LitClassifier:
    """The LitClassifier that trains ``model`` with the run's optimizer, scheduler and loss."""
    return LitClassifier(
        model,
        optimizer=build_optimizer(cfg),
        scheduler=build_scheduler(cfg),
        label_smoothing=cfg.loss.label_smoothing,
        aux_weight=cfg.loss.aux_weight,
        cuda_graphs=bool(cfg.get("cuda_graphs")),
        compile=bool(cfg.get("compile")),
    )
