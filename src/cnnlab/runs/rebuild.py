"""A run's config, rebuilt from the project's own ``conf/`` and the run's command-line overrides.

A run directory (results.json, a checkpoint's ``cnnlab`` entry) may come from anywhere: a
colleague, a download, a shared disk. Its stored ``config`` is never instantiated, since a
``_target_`` in it would run any callable it names. Instead the config is composed again from
``conf/`` ("train", as cnnlab-train composes it) with the run's recorded overrides, and each
override is checked first: nothing read from a run directory may choose what gets instantiated.

Refused overrides:

- a key or a dict key in the value that names one of Hydra's instantiation keys
  (``_target_``, ``_partial_``, ``_args_``, ``_recursive_``, ``_convert_``);
- ``hydra.*`` and ``hydra/...``: Hydra's own settings (callbacks, launchers, run dirs);
- ``group@package=...``: it moves a config (with its ``_target_``) to another node;
- a config-group option that is a path (``model=../../elsewhere/x``): Hydra would read a YAML file
  from outside ``conf/``, ``_target_`` and all;
- an interpolation (``${...}``): resolvers such as ``oc.decode`` build values, dicts included, out
  of text that passes every check above;
- a sweep (``a,b``, ``choice(...)``): one run has one value.

Where a command does use a stored config (``resume=``/``ckpt_path=`` continue a run with the
config it started with), check_stored_config allows in it only what the project ships: every
``_target_`` must be one that conf/ or experiments/ names, and every interpolation must use a
resolver that conf/ uses and that reads values rather than building them from text.

Hydra's own ``--experimental-rerun <.hydra/config.pickle>`` would unpickle a file of the run
directory: every entry point refuses it first (refuse_pickled_rerun).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cnnlab.errors import ConfigError
from cnnlab.resolvers import config_dir, config_groups, project_root

INSTANTIATION_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
# Groups that configure only Hydra's sweeper (hydra.sweeper.*), which a rebuilt config does not
# have: a trial of `-m hparams_search=lenet_optuna` would otherwise need the Optuna plugin here.
SWEEPER_ONLY_GROUPS = ("hparams_search",)
_OPTION_NAME = re.compile(r"[\w.-]+")  # conf/<group>/<option>.yaml: a plain file name
# Resolvers that turn text into values of any type (dicts with a _target_ included): never
# allowed in a stored config, even if conf/ came to use one.
BUILDING_RESOLVERS = frozenset({"oc.create", "oc.decode"})
_SHIPPED_RESOLVER = re.compile(r"\$\{\s*([\w.]+)\s*:")


def _refuse(override: str, why: str, source: str | None) -> ConfigError:
    where = f" (from {source})" if source else ""
    return ConfigError(
        f"the run's override {override!r}{where} is refused: {why}. A run's config is rebuilt "
        f"from the project's conf/ and the run's plain key=value overrides only, so that nothing "
        f"in a run directory can choose what gets instantiated; check where this run directory "
        f"came from."
    )


def _walk(value: Any) -> tuple[list[str], list[str]]:
    """(every dict key, every string) anywhere in a parsed override value."""
    keys: list[str] = []
    strings: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            keys.append(str(key))
            more_keys, more_strings = _walk(item)
            keys += more_keys
            strings += more_strings
    elif isinstance(value, list | tuple):
        for item in value:
            more_keys, more_strings = _walk(item)
            keys += more_keys
            strings += more_strings
    elif isinstance(value, str):
        strings.append(value)
    return keys, strings


def check_overrides(overrides: Any, source: str | None = None) -> list[str]:
    """The overrides, if every one is safe to compose (the module docstring lists what is not);
    otherwise a ConfigError naming the first refused one. ``source`` names where they were read
    (for the message)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    where = f" in {source}" if source else ""
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(
            f"the run's overrides{where} are not a list of strings ({overrides!r:.200}); the "
            f"file was not written by cnnlab or was changed since."
        )
    parser = OverridesParser.create()
    groups = config_groups()
    for text in overrides:
        # The raw text first: no parsing trick (quotes, escapes) gets a reserved name through.
        for name in INSTANTIATION_KEYS:
            if name in text:
                raise _refuse(text, f"it names {name}, which would choose what is built", source)
        if "${" in text:
            raise _refuse(text, "it holds an interpolation (${...})", source)
        try:
            override = parser.parse_override(text)
        except HydraException as err:
            raise _refuse(text, f"it is not a valid override ({err})", source) from None
        key = override.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            raise _refuse(text, "it sets Hydra's own config (hydra.*)", source)
        if override.package is not None or "@" in key:
            raise _refuse(text, "it moves a config to another package (@)", source)
        if override.is_sweep_override():
            raise _refuse(text, "it is a sweep over several values, not one run's value", source)
        keys, strings = _walk(override.value())
        for found in [key, *keys]:
            if any(name in found for name in INSTANTIATION_KEYS):
                raise _refuse(text, "it sets an instantiation key (_target_ and the like)", source)
        if any("${" in s for s in strings):
            raise _refuse(text, "it holds an interpolation (${...})", source)
        if key.split("/")[0] in groups or ".." in key:
            bad = [s for s in strings if not _OPTION_NAME.fullmatch(s) or ".." in s]
            if bad or ".." in key:
                raise _refuse(
                    text,
                    "a config-group option must name a file of conf/ (e.g. model=lenet), "
                    "not a path",
                    source,
                )
    return list(overrides)


def check_choices(choices: Any, source: str | None = None) -> dict[str, Any]:
    """A run's recorded config-group choices (model=lenet, ...), if each is a group of conf/ with a
    plain option name (check_overrides' rules); otherwise a ConfigError."""
    where = f" in {source}" if source else ""
    if choices is None:
        return {}
    if not isinstance(choices, dict):
        raise ConfigError(
            f"the run's config-group choices{where} are not a mapping ({choices!r:.200}); the "
            f"file was not written by cnnlab or was changed since."
        )
    as_overrides = []
    for group, option in choices.items():
        if option is None:  # a group left unset (debug: null)
            continue
        if not isinstance(group, str) or not isinstance(option, str):
            raise ConfigError(
                f"the run's config-group choice {group!r}: {option!r}{where} is not a group name "
                f"and an option name; the file was not written by cnnlab or was changed since."
            )
        as_overrides.append(f"{group}={option}")
    check_overrides(as_overrides, source)
    return dict(choices)


# --- what a stored config may hold -------------------------------------------------------------
def _shipped_yaml_files() -> list[Path]:
    root = project_root()
    # conf/experiment links to experiments/: read each file once, under its real path.
    files = {p.resolve() for p in (root / "conf").rglob("*.yaml")}
    files |= {p.resolve() for p in (root / "experiments").glob("*.yaml")}
    return sorted(files)


def _walk_config(node: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, key, value) of every entry anywhere in a plain dict/list tree."""
    found: list[tuple[str, Any, Any]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        where = f"{path}.{key}" if path else str(key)
        found.append((where, key, value))
        if isinstance(value, dict | list):
            found += _walk_config(value, where)
    return found


def _resolver_names(text: str) -> list[str]:
    """The resolvers an OmegaConf string calls (nested ones and those inside quoted arguments
    too); a GrammarParseError for text OmegaConf could not read."""
    from omegaconf import grammar_parser
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

    names: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, OmegaConfGrammarParser.ResolverNameContext):
            names.append(node.getText())
        for child in getattr(node, "children", None) or []:
            visit(child)

    visit(grammar_parser.parse(text))
    return names


@functools.cache
def _shipped() -> tuple[frozenset[str], frozenset[str]]:
    """(every ``_target_``, every resolver) that conf/ and experiments/ use."""
    import yaml

    targets: set[str] = set()
    resolvers: set[str] = set()
    for path in _shipped_yaml_files():
        content = yaml.safe_load(path.read_text()) or {}
        if not isinstance(content, dict | list):
            continue
        for _, key, value in _walk_config(content):
            if key == "_target_" and isinstance(value, str):
                targets.add(value)
            elif isinstance(value, str) and "${" in value:
                # The project's own files: a pattern is enough (the grammar takes ~5 ms a string).
                resolvers.update(_SHIPPED_RESOLVER.findall(value))
    return frozenset(targets), frozenset(resolvers - BUILDING_RESOLVERS)


def shipped_targets() -> frozenset[str]:
    """The ``_target_`` values of conf/**/*.yaml and experiments/*.yaml: the models, torch's
    optimizers and schedulers, the loggers, the datamodule, the sweep callback, ..."""
    return _shipped()[0]


def shipped_resolvers() -> frozenset[str]:
    """The resolvers conf/ and experiments/ use (oc.select, cnnlab_root, ...), less those that
    build values out of text (oc.create, oc.decode)."""
    return _shipped()[1]


def check_stored_config(config: Any, source: str) -> dict[str, Any]:
    """``config`` (a run's stored config, as plain data), if it may be used as it is; otherwise a
    ConfigError naming ``source`` and the offending key. Allowed: any value, a ``_target_`` only
    where it names one the project ships (shipped_targets), an interpolation only of a config
    key (``${dataset.image_size}``) or through a resolver conf/ uses (shipped_resolvers)."""
    if not isinstance(config, dict):
        raise ConfigError(
            f"{source}: the stored config is not a mapping ({type(config).__name__}); the file "
            f"was not written by cnnlab or was changed since: check where this run directory "
            f"came from."
        )

    def refuse(key: str, why: str) -> ConfigError:
        return ConfigError(
            f"{source}: the stored config is refused at {key}: {why}. A stored config may only "
            f"name what cnnlab's own conf/ names, so that a run directory cannot choose what "
            f"gets run, and cnnlab-train never writes this: check where this run directory came "
            f"from."
        )

    from omegaconf.errors import GrammarParseError

    targets, resolvers = shipped_targets(), shipped_resolvers()
    for where, key, value in _walk_config(config):
        if key == "_target_":
            if not isinstance(value, str) or value not in targets:
                raise refuse(
                    where, f"_target_ {value!r:.100} is not one of the targets conf/ ships"
                )
        if not isinstance(value, str) or "${" not in value:
            continue
        try:
            called = _resolver_names(value)
        except GrammarParseError:
            raise refuse(where, f"{value!r:.100} is not a valid interpolation") from None
        foreign = [name for name in called if name not in resolvers]
        if foreign:
            raise refuse(
                where,
                f"{value!r:.100} calls the resolver {foreign[0]!r}, which conf/ does not use "
                f"(allowed: {', '.join(sorted(resolvers))}, and plain ${{key.path}} references)",
            )
    return config


def rebuild_config(overrides: list[str], *, source: str | None = None) -> DictConfig:
    """The run's config: conf/'s "train" composed with ``overrides``, after check_overrides.

    Works inside a running Hydra app (cnnlab-eval) as well as outside one: the app's global Hydra
    state is put aside for the compose and restored after it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf.errors import OmegaConfBaseException

    overrides = check_overrides(overrides, source)
    usable = [o for o in overrides if _key(o) not in SWEEPER_ONLY_GROUPS]
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            return compose("train", overrides=usable)
    except (HydraException, OmegaConfBaseException) as err:
        details = " ".join(str(err).split())
        if len(details) > 400:
            details = details[:400] + "..."
        where = f" of {source}" if source else ""
        raise ConfigError(
            f"the run's config cannot be rebuilt from conf/ with its overrides{where} "
            f"({' '.join(usable) or 'none'}): {details}. The run was made with a config this "
            f"checkout no longer has (a renamed option or key?)."
        ) from None
    finally:
        GlobalHydra.instance().clear()
        restore_gh_from_backup(backup)


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


# --- Hydra's pickled rerun ----------------------------------------------------------------------
RERUN_FLAG = "--experimental-rerun"


def refuse_pickled_rerun(argv: Sequence[str]) -> None:
    """Exit with status 1 when the command line has Hydra's ``--experimental-rerun <file>``:
    Hydra unpickles that file (a run's ``.hydra/config.pickle``), and unpickling runs whatever
    code the file holds. cnnlab never writes the file; a run is repeated from its overrides. Every
    entry point calls this before Hydra parses its arguments."""
    if not any(a == RERUN_FLAG or a.startswith(f"{RERUN_FLAG}=") for a in argv):
        return
    print(
        f"error: {RERUN_FLAG} is refused: Hydra would unpickle the file it names, which runs any "
        f"code the file holds, and cnnlab never writes one. Repeat a run with its overrides "
        f"instead (results.json records them: cnnlab-train <overrides>), or continue it with "
        f"cnnlab-train resume=<run dir>.",
        file=sys.stderr,
    )
    raise SystemExit(1)


# --- which run, which checkpoint ---------------------------------------------------------------
@dataclass
class RunSource:
    """A trained model to load: the run's overrides (checked), the checkpoint (read with
    ``weights_only=True``), and where both came from."""

    # None only for run_source(..., bare=True): a checkpoint that records no run at all.
    overrides: list[str] | None
    overrides_from: str  # the file the overrides were read from (for messages and records)
    checkpoint_path: Path
    checkpoint: dict[str, Any]
    run_dir: Path | None
    # The config the run recorded, as data: compared with the rebuilt one (config_drift), never
    # instantiated.
    recorded_config: Any = None


def checked_meta(checkpoint: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """A checkpoint's ``cnnlab`` entry, after checking everything in it that a command may use:
    its config (check_stored_config), overrides and choices (check_overrides); None when the
    checkpoint has none. A tampered entry is refused wherever it is read, used or not."""
    from cnnlab.runs.checkpoints import META_KEY

    meta = checkpoint.get(META_KEY)
    if meta is None:
        return None
    source = f"checkpoint {path} ({META_KEY} entry)"
    if not isinstance(meta, dict):
        raise ConfigError(
            f"{source} is not a mapping; the checkpoint was not written by cnnlab or was changed "
            f"since. Use another checkpoint of the run."
        )
    if "config" in meta:
        check_stored_config(meta["config"], source)
    if "overrides" in meta:
        check_overrides(meta["overrides"], source)
    check_choices(meta.get("choices"), source)
    return meta


def run_source(
    run_dir: str | Path | None,
    ckpt_path: str | Path | None,
    *,
    ckpt_key: str = "ckpt_path",
    bare: bool = False,
) -> RunSource:
    """The overrides and checkpoint of ``run_dir=`` (its results.json; its best checkpoint, else
    last.ckpt, unless ``ckpt_path=`` names one) or of ``ckpt_path=`` alone (the checkpoint's
    ``cnnlab`` entry, else the results.json of the run directory it lies in). Every problem is a
    ConfigError that says what to give instead; ``ckpt_key`` is the command's name for the
    checkpoint argument. With ``bare``, a checkpoint that records no run gives overrides None
    (the command then uses its own model config) instead of an error."""
    from cnnlab.runs.checkpoints import META_KEY, load_checkpoint
    from cnnlab.runs.results import RESULTS_FILE, read_results
    from cnnlab.runs.rundir import find_checkpoint, run_dir_of

    if run_dir:
        run_dir = Path(run_dir)
        results_path = run_dir / RESULTS_FILE
        if not run_dir.is_dir():
            raise ConfigError(
                f"run_dir={run_dir}: no such directory. Give the directory of a training run "
                f"(cnnlab-train prints it, e.g. outputs/runs/<date>/<time>), or "
                f"{ckpt_key}=<file.ckpt>."
            )
        results = read_results(run_dir)
        if results is None:
            raise ConfigError(
                f"{run_dir} has no {RESULTS_FILE}: it is not a training run's directory, or the "
                f"run has not ended yet. Give a finished run, or {ckpt_key}=<file.ckpt> (its "
                f"checkpoints/last.ckpt)."
            )
        if results.get("status") == "unreadable":
            raise ConfigError(f"{results_path}: {results.get('error')}")
        if "overrides" not in results:
            raise ConfigError(
                f"{results_path} records no overrides, so the run's config cannot be rebuilt; "
                f"give {ckpt_key}=<file.ckpt> of the run instead."
            )
        overrides = check_overrides(results["overrides"], str(results_path))
        recorded = results.get("config")
        if recorded is not None:
            check_stored_config(recorded, str(results_path))
        path = Path(ckpt_path) if ckpt_path else find_checkpoint(run_dir)
        checkpoint = load_checkpoint(path)
        checked_meta(checkpoint, path)
        return RunSource(overrides, str(results_path), path, checkpoint, run_dir, recorded)
    if not ckpt_path:
        raise ConfigError(
            f"say which model to use: run_dir=<training run directory> (its best "
            f"checkpoint) or {ckpt_key}=<file.ckpt>."
        )
    path = Path(ckpt_path)
    checkpoint = load_checkpoint(path)
    meta = checked_meta(checkpoint, path)
    home = run_dir_of(path)
    if home is not None and not (home / RESULTS_FILE).is_file():
        home = None
    if meta is None or "overrides" not in meta:
        if home is not None:  # an older checkpoint: its run's results.json has the overrides
            return run_source(home, path, ckpt_key=ckpt_key)
        if bare:
            return RunSource(None, f"{path} (no run recorded)", path, checkpoint, None)
        raise ConfigError(
            f"checkpoint {path} has no '{META_KEY}' entry with its run's overrides (it was not "
            f"written by cnnlab-train), so its config cannot be rebuilt. Give run_dir=<the "
            f"directory of the run it came from> and {ckpt_key}={path}."
        )
    return RunSource(
        list(meta["overrides"]),
        f"{path} ({META_KEY} entry)",
        path,
        checkpoint,
        home,
        meta.get("config"),
    )


# What a config rebuilt today may differ in without changing the model or its test: where the data
# lies, and the test subset (cnnlab-eval tests on the full split).
DRIFT_SECTIONS = ("model", "dataset", "loss")
DRIFT_IGNORED = ("dataset.root", "dataset.test_subset")


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}.{key}"))
        return flat
    return {prefix: node}


def config_drift(rebuilt: DictConfig, recorded: Any) -> list[str]:
    """Where the rebuilt config's model, dataset and loss differ from the config the run recorded
    ("model.activation: 'relu' in the run, 'sigmoid' now"): conf/ changed since the run, or the
    run was started without recorded overrides. Read as data only; unresolved values
    (``${...}``, as a checkpoint stores them) are not compared."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(recorded, dict):
        return []
    drift: list[str] = []
    for section in DRIFT_SECTIONS:
        if not isinstance(recorded.get(section), dict) or section not in rebuilt:
            continue
        try:
            now = OmegaConf.to_container(rebuilt[section], resolve=True)
        except OmegaConfBaseException:
            continue
        new, old = _flatten(now, section), _flatten(recorded.get(section), section)
        for key in sorted(set(new) | set(old)):
            if key in DRIFT_IGNORED:
                continue
            before, after = old.get(key), new.get(key)
            if isinstance(before, str) and "${" in before:
                continue
            if before != after:
                drift.append(f"{key}: {before!r} in the run, {after!r} now")
    return drift
