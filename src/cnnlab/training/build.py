"""From config to objects: the model, the data, the optimizer, the LitClassifier of a run.

The config has passed cnnlab.training.checks by now; the builders check once more what only
building can tell (the image size a model accepts).
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cnnlab.analysis.min_size import forward_error, min_input_size
from cnnlab.errors import ConfigError
from cnnlab.training.checks import (
    check_arguments,
    check_config,
    check_dataset,
    check_loss,
    check_optimizer,
    explicit_root,
)
from cnnlab.training.lit import LitClassifier


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
    except ValueError:
        # No size works: the model's knobs are what is wrong (model.activation=swish), so their
        # error comes first, not the image size.
        raise ConfigError(
            f"{error.rstrip('.')}. No input size up to 512 works either, so it is not "
            f"dataset.image_size: check the model.* values."
        ) from None
    raise ConfigError(
        f"model {cfg.model._target_} cannot run on {size}x{size} images: the smallest input "
        f"this model accepts is {minimum}x{minimum}. Set dataset.image_size={minimum} or "
        f"larger. (First error: {error})"
    )


def build_checked_model(cfg: DictConfig) -> torch.nn.Module:
    """The run's model, after checking the config (check_config) and that the model accepts the
    run's image size."""
    check_config(cfg)
    check_image_size(cfg)
    return build_model(cfg)


def build_optimizer(cfg: DictConfig) -> Any:
    """``cfg.optimizer`` as a factory: ``factory(parameters) -> torch.optim.Optimizer``."""
    check_optimizer(cfg)
    try:
        return instantiate(cfg.optimizer)
    except Exception as err:
        raise ConfigError(f"bad optimizer config: {err.__cause__ or err}") from err


def build_datamodule(cfg: DictConfig) -> Any:
    """``cfg.dataset``'s data module; a ``dataset.root`` given explicitly is the only place it
    reads the data from (no fall-back to $CNNLAB_DATA_PATH or a system copy)."""
    check_dataset(cfg)
    try:
        return instantiate(cfg.dataset, root_only=explicit_root(cfg))
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
    check_loss(cfg)
    return LitClassifier(
        model,
        optimizer=build_optimizer(cfg),
        scheduler=build_scheduler(cfg),
        label_smoothing=cfg.loss.label_smoothing,
        aux_weight=cfg.loss.aux_weight,
        cuda_graphs=bool(cfg.get("cuda_graphs")),
        compile=bool(cfg.get("compile")),
    )
