"""The course exercises: every make target of the "Course exercises" section, the sweeps of the
experiment files, QUICK mode, the Optuna search, and one sweep run end to end through make.

The commands are taken from `make -n <target>` itself, so these tests check what a student's
`make <target>` would run (test_configs.py already instantiates each experiment file alone)."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig

from cnnlab.answers.items import BIG, ITEMS
from cnnlab.data.sources import SPLIT_SIZES
from cnnlab.resolvers import project_root
from conftest import CONF_DIR, compose_config

ROOT = project_root()
MAKEFILE = ROOT / "Makefile"
# Each make target runs one of these entry points; the rest of a recipe line is shell plumbing.
ENTRY_POINTS = {
    "cnnlab-train": "train",
    "cnnlab-analyze": "analyze",
    "cnnlab-visualize": "visualize",
}


@functools.cache
def exercise_targets() -> tuple[str, ...]:
    """The targets below the "Course exercises" heading of the Makefile."""
    section = MAKEFILE.read_text().split("##@ Course exercises", 1)[1]
    return tuple(re.findall(r"^([a-z0-9-]+):.*## ", section, flags=re.M))


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


@functools.cache
def commands(target: str, mode: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(entry point, its arguments) of every command `make -n <target>` would run (the `data` and
    `install` prerequisites are left out: -o)."""
    mode_args = {"full": [], "quick": ["QUICK=1"], "laptop": ["SCALE=laptop"]}[mode]
    result = make("-n", "-o", "data", "-o", "install", target, *mode_args)
    assert result.returncode == 0, result.stderr
    script = result.stdout.replace("\\\n", " ")
    found = []
    for segment in re.split(r";|\|\||&&", script):
        words = shlex.split(segment)
        for i, word in enumerate(words):
            name = next((key for key in ENTRY_POINTS if word.endswith(key)), None)
            if name:
                found.append((ENTRY_POINTS[name], tuple(a for a in words[i + 1 :] if a != "-m")))
    return tuple(found)


def compose_named(config_name: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=True)


def sweep_jobs(args: tuple[str, ...]) -> list[list[str]]:
    """The jobs `cnnlab-train -m <args>` launches with the basic sweeper: the experiment file's
    hydra.sweeper.params combined with the command line's sweeps, as BasicSweeper combines them."""
    parser = OverridesParser.create()
    task_args = [a for a in args if not a.startswith("hydra.")]
    fixed = [o.input_line for o in parser.parse_overrides(task_args) if not o.is_sweep_override()]
    params = compose_named("train", fixed).hydra.sweeper.get("params") or {}
    merged = [f"{key}={value}" for key, value in params.items()] + task_args
    (batch,) = BasicSweeper.split_arguments(parser.parse_overrides(merged), None)
    return batch


def check_training_jobs(args: tuple[str, ...], mode: str) -> int:
    """Compose every job of the sweep, build its model and run a batch of its image size through
    it, and build its data module; returns the number of jobs. The model lives on the meta device
    (shapes only, no weights), so even ResNet-152 at 224 px takes no time."""
    jobs = sweep_jobs(args)
    for overrides in jobs:
        cfg = compose_config(overrides)
        assert bool(cfg.get("quick")) is (mode == "quick"), overrides
        if mode != "laptop":
            assert not cfg.laptop, overrides
        elif cfg.laptop:  # a laptop protocol is smaller than the course recipe, never larger
            assert cfg.dataset.image_size <= 96, overrides
        size, channels = cfg.dataset.image_size, cfg.dataset.in_channels
        with torch.device("meta"):
            model = instantiate(cfg.model).eval()
            logits = model(torch.zeros(2, channels, size, size))
        assert logits.shape == (2, cfg.dataset.num_classes), overrides
        instantiate(cfg.dataset)
        # An epoch reaches the logging interval, or TensorBoard gets no training curve (and
        # Lightning warns).
        train_images = (cfg.dataset.train_subset or SPLIT_SIZES["train"]) - cfg.dataset.val_size
        steps = math.ceil(train_images / cfg.dataset.batch_size)
        assert steps >= cfg.trainer.log_every_n_steps, overrides
    return len(jobs)


# --- the Makefile --------------------------------------------------------------------------
def test_every_exercise_item_has_a_target() -> None:
    targets = set(exercise_targets())
    expected = {
        "lenet", "lenet-pool", "lenet-improved", "lenet-optuna", "lenet-mnist",
        "lenet-activations", "alexnet", "alexnet-epochs", "alexnet-small", "alexnet-batch-size",
        "alexnet-analysis", "lenet-dropout-relu", "lenet-preprocessing", "vgg11", "vgg-layers",
        "vgg-vs-alexnet", "vgg-image-size", "vgg-depth", "googlenet", "googlenet-variants",
        "googlenet-min-size", "googlenet-params", "resnet18", "resnet-depth",
        "resnet-bottleneck", "resnet-preact", "resnet-inception", "resnet-plain",
        "vanishing-gradient", "alexnet-lrn",
        "lenet-local", "lenet-optimizers",
    }  # fmt: skip
    assert expected <= targets, sorted(expected - targets)


def test_make_help_lists_every_exercise_with_one_line() -> None:
    result = make("help")
    assert result.returncode == 0, result.stderr
    listed = dict(re.findall(r"^  ([a-z0-9-]+) +(\S.*)$", result.stdout, flags=re.M))
    for target in exercise_targets():
        assert listed.get(target), f"make help does not describe {target}"
    assert "Course exercises" in result.stdout
    for old in ("install", "train", "test", "tensorboard", "clean"):
        assert old in listed


def test_every_experiment_file_is_used_by_a_target() -> None:
    used = {
        arg.split("=", 1)[1]
        for target in exercise_targets()
        for _, args in commands(target, "full")
        for arg in args
        if arg.startswith("experiment=")
    }
    files = {p.stem for p in (ROOT / "experiments").glob("*.yaml")}
    assert files <= used, f"experiment files no make target runs: {sorted(files - used)}"


@pytest.mark.parametrize("mode", ["full", "quick", "laptop"])
@pytest.mark.parametrize(
    "target",
    [pytest.param(t, marks=pytest.mark.optuna) if "optuna" in t else t for t in exercise_targets()],
)
def test_target_commands_compose(target: str, mode: str) -> None:
    """`make -n <target> [QUICK=1 | SCALE=laptop]` succeeds, and every job it would launch
    composes, builds its model for its image size and its data module. QUICK=1 marks every
    training job quick."""
    found = commands(target, mode)
    assert found, f"make -n {target} runs no cnnlab command"
    for kind, args in found:
        if kind == "train":
            assert any(a.startswith("hydra.sweep.dir=outputs/exercises/") for a in args)
            if any(a.startswith("hparams_search=") for a in args):
                cfg = compose_named("train", [a for a in args if not a.startswith("hydra.")])
                assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
                continue
            assert check_training_jobs(args, mode) >= 1
        else:  # analyze / visualize: their own config file, the same groups
            cfg = compose_named(kind, [a for a in args if not a.startswith("hydra.")])
            for model in cfg.get("models") or []:
                assert (CONF_DIR / "model" / f"{model}.yaml").is_file(), model
    if any(kind == "train" for kind, _ in found):
        script = make("-n", "-o", "data", target).stdout
        assert "cnnlab-report" in script and "/latest" in script


def test_laptop_scale_shrinks_the_big_nets_only() -> None:
    """SCALE=laptop marks (laptop=true) jobs of every 96-224 px item and of no 28 px item."""
    for item in ITEMS:
        if not item.trains or "optuna" in item.target:
            continue
        marked = [
            bool(compose_config(job).laptop)
            for kind, args in commands(item.target, "laptop")
            if kind == "train"
            for job in sweep_jobs(args)
        ]
        assert marked and any(marked) == (item.family == BIG), item.target


def test_quick_mode_shrinks_the_data() -> None:
    (_, args), *_ = commands("lenet-pool", "quick")
    jobs = sweep_jobs(args)
    assert [j for j in jobs if "model.pool=max" in j]  # the experiment's sweep survives QUICK
    cfg = compose_config(jobs[0])
    assert (cfg.quick, cfg.dataset.train_subset, cfg.trainer.max_epochs) == (True, 30000, 3)
    (_, full_args), *_ = commands("lenet-pool", "full")
    cfg = compose_config(sweep_jobs(full_args)[0])
    assert cfg.dataset.train_subset is None and cfg.trainer.max_epochs == 10


def test_sweeps_expand_to_the_exercise_variants() -> None:
    jobs = sweep_jobs(("experiment=lenet_conv_layers",))
    layers = [len(compose_config(j).model.conv_channels) for j in jobs]
    assert layers == [1, 2, 3]
    jobs = sweep_jobs(("experiment=lenet_optimizers",))
    optimizers = {compose_config(j).optimizer._target_ for j in jobs}
    assert len(jobs) == 6 and "torch.optim.LBFGS" in optimizers
    # The optimizers keep their own learning rates, not the LeNet recipe's 0.9.
    assert compose_config(["experiment=lenet_optimizers", "optimizer=adam"]).optimizer.lr == 1e-3


@pytest.mark.optuna
def test_lenet_optuna_search_space() -> None:
    cfg = compose_named("train", ["experiment=lenet_improved", "hparams_search=lenet_optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize"  # cnnlab.cli.train.main returns the best val accuracy
    assert set(sweeper.params) == {
        "optimizer.lr",
        "model.conv_channels.0",
        "model.conv_channels.1",
    }
    widths = compose_config(["experiment=lenet_improved", "model.conv_channels.0=8"])
    assert list(widths.model.conv_channels) == [8, 32]


def test_lenet_improved_trains_on_a_cpu_sized_model() -> None:
    cfg = compose_config(["experiment=lenet_improved"])
    model = instantiate(cfg.model)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) < 500_000
    mnist = compose_config(["experiment=lenet_improved_mnist"])
    assert mnist.dataset.name == "mnist" and mnist.model == cfg.model


# --- one sweep end to end ------------------------------------------------------------------
TINY_QUICK = (
    "++quick=true dataset.train_subset=600 dataset.val_size=200 dataset.test_subset=300 "
    "trainer.max_epochs=1 trainer.enable_progress_bar=false trainer.enable_model_summary=false"
)


@pytest.fixture(scope="module")
def pool_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int]:
    """`make lenet-pool QUICK=1` on a tiny subset, with a learning rate sweep added through ARGS
    whose second value is invalid: 2 jobs train, 2 fail (record_failure writes their
    results.json), the report still comes, and make exits non-zero."""
    out = tmp_path_factory.mktemp("exercises")
    result = make(
        "-o", "data", "lenet-pool", "QUICK=1", f"EXERCISES_DIR={out}",
        f"QUICK_28={TINY_QUICK}", "ARGS=optimizer.lr=0.5,-1",
    )  # fmt: skip
    latest = out / "lenet-pool" / "latest"
    assert latest.is_symlink(), result.stdout + result.stderr
    return latest.resolve(), result.stdout, result.returncode


def report_rows(report_md: str) -> dict[str, list[str]]:
    """The main table of report.md by its first cell (the run label)."""
    table = report_md.split("\n\n| run |", 1)[1].split("\n\n", 1)[0]
    rows = [line.strip("|").split(" | ") for line in table.splitlines()[2:]]
    return {cells[0].strip(): [cell.strip() for cell in cells] for cells in rows}


def test_sweep_through_make_reports_every_job(pool_sweep: tuple[Path, str, int]) -> None:
    sweep, stdout, returncode = pool_sweep
    assert sweep.name.endswith("-quick")
    results = {d.name: json.loads((d / "results.json").read_text()) for d in sweep.iterdir()
               if (d / "results.json").is_file()}  # fmt: skip
    assert len(results) == 4
    rows = report_rows((sweep / "report.md").read_text())
    ok = [r for r in results.values() if r["status"] == "ok"]
    assert len(ok) == 2
    for run in ok:
        pool = next(o for o in run["overrides"] if o.startswith("model.pool="))
        row = rows[f"{pool.removeprefix('model.')} lr=0.5"]
        assert row[1] == "ok"
        assert row[2] == f"{run['test_acc']:.4f}" and row[3] == f"{run['val_acc']:.4f}"
        assert row[4] == f"{run['train_loss']:.4f}"
        # One TensorBoard root; the run is named by what tells it apart (pool=max,lr=0.5).
        tensorboard_dir = Path(run["tensorboard_dir"])
        assert tensorboard_dir.parent.parent.parent == sweep
        assert tensorboard_dir.name == f"{pool.removeprefix('model.')},lr=0.5"
    assert "**Quick run**" in (sweep / "report.md").read_text()
    assert (sweep / "curves.png").is_file()
    assert f"report:      {sweep / 'report.md'}" in stdout


def test_failed_jobs_are_reported_and_fail_the_target(pool_sweep: tuple[Path, str, int]) -> None:
    sweep, _, returncode = pool_sweep
    assert returncode != 0  # make says the exercise had failures, after the report
    report = (sweep / "report.md").read_text()
    rows = report_rows(report)
    for pool in ("avg", "max"):
        assert rows[f"pool={pool} lr=-1"][1] == "failed"
    assert "optimizer.lr must be a positive number" in report.split("did not finish")[1]


@pytest.mark.slow
@pytest.mark.optuna
def test_optuna_search_through_make(tmp_path: Path) -> None:
    """`make lenet-optuna QUICK=1` with 2 trials on a tiny subset: two job directories, the best
    trial in optimization_results.yaml and in the report."""
    result = make(
        "-o", "data", "lenet-optuna", "QUICK=1", f"EXERCISES_DIR={tmp_path}",
        f"QUICK_28={TINY_QUICK}", "ARGS=hydra.sweeper.n_trials=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sweep = (tmp_path / "lenet-optuna" / "latest").resolve()
    assert {p.parent.name for p in sweep.glob("*/results.json")} == {"0", "1"}
    report = (sweep / "report.md").read_text()
    assert "## Optuna: best trial" in report and "best_value" in report
    assert len(report_rows(report)) == 2
