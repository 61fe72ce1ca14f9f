"""Every value of a run's config a user can get wrong, checked before anything is set up or
built: one checker per config group (check_config), and every key of a ``_target_`` node is one
of its target's arguments (check_arguments). A bad value is a ConfigError (one paragraph: the
key, what was wrong, what to do) instead of a stack trace from deep inside PyTorch or
Lightning, or a run that silently does something else.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from cnnlab.errors import ConfigError

# Larger inputs only cost memory: the images have 28x28 pixels, and the ImageNet-style networks
# are meant for 224. A side of 100,000 px would ask for 40 GB per image and channel.
MAX_IMAGE_SIZE = 2048
MAX_SEED = 2**32 - 1  # the range numpy and Lightning accept
TOP_LEVEL_SWITCHES = ("compile", "cuda_graphs", "deterministic", "test", "quick", "laptop",
                      "resume_sweep")
DATASET_SWITCHES = ("normalize", "channels_last")
DIAGNOSTIC_SWITCHES = ("peak_memory", "grad_norms", "grad_histograms")


# --- small checks --------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_integer(
    key: str, value: Any, minimum: int, maximum: int | None = None, hint: str = ""
) -> None:
    """A ConfigError unless ``value`` is an integer in [minimum, maximum]."""
    if _is_int(value) and value >= minimum and (maximum is None or value <= maximum):
        return
    if minimum == 1 and maximum is None:
        wanted = "a positive integer"
    elif maximum is None:
        wanted = f"an integer of at least {minimum}"
    else:
        wanted = f"an integer from {minimum} to {maximum:,}"
    raise ConfigError(f"{key} must be {wanted}, got {value!r}{'; ' + hint if hint else ''}.")


def check_switch(key: str, value: Any) -> None:
    # A YAML/command-line word such as "yes" or "maybe" stays a string, and any non-empty string
    # is true in Python: compile=yes would compile, deterministic=maybe would be deterministic.
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}; e.g. {key}=true.")


def _finite(key: str, value: Any) -> None:
    if _is_number(value) and not math.isfinite(value):
        raise ConfigError(
            f"{key} must be a finite number, got {value!r}: with it the first step would make "
            f"every weight NaN. Give a number, e.g. {key}=0.1."
        )


def _node(cfg: DictConfig, group: str) -> DictConfig | None:
    """The group's config node; None where the config has no such group (or it is null, as
    ``scheduler`` is for scheduler=none); a ConfigError where it is a plain value."""
    node = cfg.get(group)
    if node is None or isinstance(node, DictConfig):
        return node
    raise ConfigError(
        f"{group} must be a config group (its keys, as conf/{group}/ gives them), got {node!r}; "
        f"choose an option with {group}=<name>, e.g. {group}=default (cnnlab-train --help lists "
        f"them)."
    )


# --- what conf/ ships ---------------------------------------------------------------------------
def _conf_dir() -> Path:
    from cnnlab.resolvers import config_dir

    return config_dir()


@functools.cache
def _ablation_settings(name: str) -> dict[str, Any]:
    """{dotted key: value} of what conf/ablation/<name>.yaml sets (an empty dict if there is no
    such file: Hydra reports an unknown option while composing)."""
    path = _conf_dir() / "ablation" / f"{name}.yaml"
    if not path.is_file():
        return {}
    return flat_keys(OmegaConf.to_container(OmegaConf.load(path), resolve=False))


def flat_keys(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as {"group.key": leaf value}."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat |= flat_keys(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


@functools.cache
def _model_options() -> dict[str, list[str]]:
    """{model target: the conf/model options that build it}."""
    options: dict[str, list[str]] = {}

    def natural(path: Path) -> list[Any]:  # resnet18 before resnet101
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem)]

    for path in sorted((_conf_dir() / "model").glob("*.yaml"), key=natural):
        target = OmegaConf.load(path).get("_target_")
        if target:
            options.setdefault(str(target), []).append(path.stem)
    return options


def _arguments(target: str) -> list[str] | None:
    """The keyword arguments a config of ``target`` may set, or None where it takes any
    (``**kwargs``) or cannot be found (instantiate reports that)."""
    try:
        parameters = inspect.signature(get_object(target)).parameters.values()
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    # The first argument of an optimizer (params) or scheduler (optimizer) is given by the loop.
    given_by_loop = {"self", "params", "optimizer"}
    return [p.name for p in parameters if p.name not in given_by_loop]


def chosen_ablations(overrides: Sequence[str]) -> list[str]:
    """The ablations of a run's overrides, in order (``ablation=[relu,max_pool]``): they are only
    on the command line, never among Hydra's recorded choices."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    names: list[str] = []
    texts = [text for text in overrides if "ablation" in text]
    if not texts:
        return names
    parser = OverridesParser.create()
    for text in texts:
        try:
            override = parser.parse_override(text)
        except HydraException:
            continue  # Hydra itself reports a malformed override
        if override.key_or_group != "ablation" or override.is_delete():
            continue
        value = override.value()
        names += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return names


# --- one checker per group ----------------------------------------------------------------------
def check_config(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """Every value of a run's config a user can set wrong, group by group; ``overrides`` (the
    run's command line) name the ablations, for the checks that need to know them. Groups the
    config lacks (cnnlab-visualize's has no optimizer) are skipped."""
    ablations = chosen_ablations(overrides)
    check_ablations(ablations)
    check_run(cfg)
    if _node(cfg, "dataset") is not None:
        check_dataset(cfg)
    if _node(cfg, "model") is not None:
        check_model(cfg, ablations)
    if _node(cfg, "loss") is not None:
        check_loss(cfg)
    if _node(cfg, "optimizer") is not None:
        check_optimizer(cfg)
    if _node(cfg, "diagnostics") is not None:
        check_diagnostics(cfg)


def check_ablations(names: Sequence[str]) -> None:
    """Two ablations that set one key to different values: the later one would win silently."""
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = _ablation_settings(first), _ablation_settings(second)
            for key in a.keys() & b.keys():
                if a[key] != b[key]:
                    raise ConfigError(
                        f"ablation=[{','.join(names)}]: {first} sets {key}={a[key]} and {second} "
                        f"sets {key}={b[key]}; only the last one would take effect. Keep one of "
                        f"them (for both variants, run them as a sweep: -m "
                        f"ablation=[{first}],[{second}])."
                    )


def check_run(cfg: DictConfig) -> None:
    """The top-level keys: the seed and the on/off switches."""
    if "seed" in cfg:
        check_integer(
            "seed",
            cfg.seed,
            0,
            MAX_SEED,
            "it seeds the weights, the data order and the augmentation (e.g. seed=0, or -m "
            "seed=0,1,2 for three runs)",
        )
    for key in TOP_LEVEL_SWITCHES:
        if key in cfg:
            check_switch(key, cfg.get(key))


def check_dataset(cfg: DictConfig) -> None:
    """``dataset.*``: the dataset, the sizes, the subsets, the switches and an explicit root."""
    from cnnlab.data.datamodule import AUGMENTS
    from cnnlab.data.sources import DATASETS, SPLIT_SIZES, check_given_root

    ds = cfg.dataset
    check_arguments("dataset", ds)
    name = ds.get("name")
    if name not in DATASETS:
        raise ConfigError(
            f"dataset.name must be one of {', '.join(DATASETS)}, got {name!r}; choose the dataset "
            f"with dataset=<name> (e.g. dataset=mnist)."
        )
    classes = len(DATASETS[name].classes)
    if ds.get("num_classes", classes) != classes:
        raise ConfigError(
            f"dataset.num_classes must be {classes}, the classes of {name}, got "
            f"{ds.num_classes!r}; leave it at its default."
        )
    check_integer(
        "dataset.batch_size",
        ds.get("batch_size"),
        1,
        None,
        "the images of one training step per device, e.g. dataset.batch_size=256",
    )
    check_integer(
        "dataset.eval_batch_size",
        ds.get("eval_batch_size"),
        1,
        None,
        "the batch size of validation and test, e.g. dataset.eval_batch_size=1024",
    )
    image_size = ds.get("image_size")
    check_integer(
        "dataset.image_size",
        image_size,
        1,
        None,
        "the side in pixels the images are resized to, e.g. 28 (LeNet) or 224",
    )
    if image_size > MAX_IMAGE_SIZE:
        gigabytes = image_size**2 * 4 / 1e9
        raise ConfigError(
            f"dataset.image_size={image_size} is larger than {MAX_IMAGE_SIZE}, the largest cnnlab "
            f"accepts: one image alone would be {gigabytes:,.1f} GB of float32 per channel, and "
            f"the 28x28 images hold no more detail. The networks' own sizes are 28 (LeNet) and "
            f"224 (the ImageNet-style networks)."
        )
    check_integer(
        "dataset.in_channels",
        ds.get("in_channels", 1),
        1,
        3,
        "1 for the grey images as they are, 3 to feed them to a model built for RGB",
    )
    train_images = SPLIT_SIZES["train"]
    val_size = ds.get("val_size", 0)
    check_integer(
        "dataset.val_size",
        val_size,
        0,
        train_images - 1,
        f"the images held out of the {train_images:,} training images for validation (0: no "
        f"validation)",
    )
    subsets = {"train_subset": train_images - val_size, "test_subset": SPLIT_SIZES["test"]}
    for key, available in subsets.items():
        value = ds.get(key)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise ConfigError(
                f"dataset.{key} must be null (all images) or a positive integer, got {value!r}; "
                f"e.g. dataset.{key}=2000 uses the first 2,000."
            )
        if value > available:
            split = {
                "train_subset": f"training images left after dataset.val_size={val_size:,} are "
                f"held out",
                "test_subset": "images of the test split",
            }[key]
            raise ConfigError(
                f"dataset.{key}={value:,} is more than the {available:,} {split}; use at most "
                f"{available}, or dataset.{key}=null for all of them."
            )
    augment = ds.get("augment", [])
    if not isinstance(augment, ListConfig | list) or any(a not in AUGMENTS for a in augment):
        raise ConfigError(
            f"dataset.augment must be a list of {', '.join(AUGMENTS)} (e.g. "
            f"dataset.augment=[hflip,crop], or [] for none), got {augment!r}."
        )
    for key in DATASET_SWITCHES:
        check_switch(f"dataset.{key}", ds.get(key))
    if "seed" in ds:
        check_integer("dataset.seed", ds.seed, 0, MAX_SEED, "it follows seed unless set")
    if explicit_root(cfg):
        check_given_root(name, ds.root)


def explicit_root(cfg: DictConfig) -> bool:
    """Whether ``dataset.root`` was given (on the command line, in an experiment) rather than
    left at its default (``${paths.data_dir}``): a given root is the only place data is read."""
    if OmegaConf.is_interpolation(cfg.dataset, "root"):  # checked first: nothing to resolve
        return False
    return cfg.dataset.get("root") is not None


def check_model(cfg: DictConfig, ablations: Sequence[str] = ()) -> None:
    """``model.*``: every key an argument of the model; a knob of another family (an ablation
    such as preact, a ResNet knob, on LeNet) is named as such."""
    model = cfg.model
    target = str(model.get("_target_"))
    valid = _arguments(target)
    if valid is not None:
        for key in model:
            if str(key).startswith("_") or key in valid:
                continue
            owners = [t for t, args in _model_knobs().items() if key in args and t != target]
            if not owners:
                break  # not a knob of any model: check_arguments names the closest key
            options = ", ".join(o for t in owners for o in _model_options().get(t, []))
            setters = [a for a in ablations if f"model.{key}" in _ablation_settings(a)]
            if setters:
                what = f"ablation {setters[-1]} sets model.{key}, which is"
                fix = f"drop {setters[-1]} from ablation=[...]"
            else:
                what, fix = f"model.{key} is", f"drop model.{key}"
            raise ConfigError(
                f"{what} a knob of {' and '.join(owners)} (model={options}), and the model of "
                f"this run, {target}, has no such knob (its knobs: {', '.join(valid)}). To run "
                f"it, {fix}, or choose a model it applies to (e.g. model={options.split(', ')[0]})."
            )
    check_arguments("model", model)


@functools.cache
def _model_knobs() -> dict[str, tuple[str, ...]]:
    """{model target of conf/model: its arguments}."""
    return {t: tuple(_arguments(t) or ()) for t in _model_options()}


def check_loss(cfg: DictConfig) -> None:
    """``loss.label_smoothing`` in [0, 1) and ``loss.aux_weight`` >= 0."""
    smoothing = cfg.loss.get("label_smoothing", 0.0)
    if not _is_number(smoothing) or not 0 <= smoothing < 1:
        raise ConfigError(
            f"loss.label_smoothing must be a number from 0 (none) up to, not including, 1, got "
            f"{smoothing!r}; the Inception-v3 value is 0.1 (ablation=[label_smoothing])."
        )
    weight = cfg.loss.get("aux_weight", 0.3)
    if not _is_number(weight) or not math.isfinite(weight) or weight < 0:
        raise ConfigError(
            f"loss.aux_weight must be a number of at least 0 (the weight of GoogLeNet's "
            f"auxiliary-head losses; 0.3 in the paper), got {weight!r}."
        )


def check_optimizer(cfg: DictConfig) -> None:
    """``optimizer.*`` (and ``scheduler.*``): the learning rate, numbers where the optimizer
    wants numbers, finite ones, and a dry run of both on one parameter, so what torch refuses
    is refused now rather than when training starts."""
    opt = cfg.optimizer
    lr = opt.get("lr")
    if not _is_number(lr) or not lr > 0 or not math.isfinite(lr):
        infinite = " (not finite: the first step would make every weight NaN)"
        raise ConfigError(
            f"optimizer.lr must be a positive number, got {lr!r}"
            f"{infinite if _is_number(lr) and not math.isfinite(lr) else ''}; e.g. "
            f"optimizer.lr=0.1."
        )
    check_arguments("optimizer", opt)
    _numbers_where_numbers("optimizer", opt)
    decay = opt.get("weight_decay", 0.0)
    if _is_number(decay) and decay < 0:
        raise ConfigError(
            f"optimizer.weight_decay must be at least 0 (0 switches it off; 5e-4 is the usual "
            f"value), got {decay!r}."
        )
    scheduler = _node(cfg, "scheduler")
    if scheduler is not None and scheduler.get("_target_"):
        check_arguments("scheduler", scheduler)
        _numbers_where_numbers("scheduler", scheduler)
        hints = {
            "step_size": "the epochs between two drops of the learning rate, e.g. "
            "scheduler.step_size=5",
            "T_max": "the epochs of the cosine schedule; it follows trainer.max_epochs, so give "
            "trainer.max_epochs a positive number (or set scheduler.T_max)",
        }
        for key, hint in hints.items():
            if key in scheduler:
                check_integer(f"scheduler.{key}", scheduler.get(key), 1, None, hint)
    _dry_run(cfg)


def _numbers_where_numbers(group: str, node: DictConfig) -> None:
    """Where the target's own default is a number (or a tuple of numbers, Adam's betas), the
    value must be one too, and finite; where it is true/false, true or false."""
    try:
        parameters = inspect.signature(get_object(str(node._target_))).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return
    for key in node:
        if str(key).startswith("_") or key not in parameters:
            continue
        value, default = node.get(key), parameters[key].default
        items = list(value) if isinstance(value, ListConfig | list) else [value]
        if isinstance(default, bool):
            check_switch(f"{group}.{key}", value)
        elif _is_number(default) or (
            isinstance(default, tuple) and default and all(_is_number(d) for d in default)
        ):
            several = isinstance(default, tuple)
            if several != isinstance(value, ListConfig | list) or not all(
                _is_number(item) for item in items
            ):
                wanted = f"a list of {len(default)} numbers" if several else "a number"
                shown = list(default) if several else default
                raise ConfigError(
                    f"{group}.{key} must be {wanted} (its default is {shown}), got {value!r}."
                )
            for item in items:
                _finite(f"{group}.{key}", item)


def _dry_run(cfg: DictConfig) -> None:
    """Build the optimizer (and scheduler) for one parameter and step the scheduler: torch's own
    checks (momentum, betas, eps, ...) and its run-time errors, before the run starts."""
    weight = torch.nn.Parameter(torch.zeros(1))
    group = "optimizer"
    try:
        optimizer = instantiate(cfg.optimizer)([weight])
        scheduler_cfg = _node(cfg, "scheduler")
        if scheduler_cfg is not None and scheduler_cfg.get("_target_"):
            group = "scheduler"
            scheduler = instantiate(scheduler_cfg)(optimizer)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
                for _ in range(3):
                    scheduler.step()
    except (ValueError, TypeError, ZeroDivisionError, RuntimeError) as err:
        cause = err.__cause__ or err
        node = cfg[group]
        named = [f"{group}.{k}" for k in node if not str(k).startswith("_") and k in str(cause)]
        keys = f" ({', '.join(named)})" if named else ""
        raise ConfigError(
            f"{node._target_} refuses the {group} config{keys}: {cause}. Check the {group}.* "
            f"values (cnnlab-train --help lists the options)."
        ) from None


def check_diagnostics(cfg: DictConfig) -> None:
    diagnostics = cfg.diagnostics
    for key in DIAGNOSTIC_SWITCHES:
        check_switch(f"diagnostics.{key}", diagnostics.get(key))
    if "grad_norms_every_n_steps" in diagnostics:
        check_integer(
            "diagnostics.grad_norms_every_n_steps",
            diagnostics.grad_norms_every_n_steps,
            1,
            None,
            "the gradient norms are recorded every that many optimizer steps",
        )


def check_arguments(group: str, node: DictConfig) -> None:
    """Every key of a config node with a ``_target_`` is an argument of that target, or a
    ConfigError names the key, the valid keys and the closest one (a typo such as
    ``+optimizer.learningrate=0.1`` would otherwise fail deep inside training)."""
    valid = _arguments(str(node._target_))
    if valid is None:
        return
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


# --- builders ----------------------------------------------------------------------------------
