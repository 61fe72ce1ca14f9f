"""Every bad input is one paragraph and exit status 1 (issue 19, section 5).

Each value below once ended in a stack trace, or ran silently as something else (a subset of 0
meaning "all", a NaN learning rate reported as a divergence, the last of two conflicting
ablations winning). Now the checkers of cnnlab.training.build stop the run before anything is
built, with a message that names the key, what was wrong and what to do. The commands run in the
test process through the real entry point, in a scratch project (``paths.root_dir``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from cli_runner import call_entry_point, run_cli
from cnnlab.cli import visualize
from cnnlab.data import DATASETS, write_idx
from cnnlab.data import __main__ as data_main
from cnnlab.data import sources as data_sources
from cnnlab.resolvers import config_dir, project_root
from cnnlab.training.checks import check_config
from conftest import QUICK, requires_mnist

IDX_FILES = {  # stem: (images or labels, split)
    "train-images-idx3-ubyte": ("images", "train"),
    "train-labels-idx1-ubyte": ("labels", "train"),
    "t10k-images-idx3-ubyte": ("images", "test"),
    "t10k-labels-idx1-ubyte": ("labels", "test"),
}


def refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, dict]:
    """The one error line of ``cnnlab-train *QUICK *args`` (exit status 1, no traceback) and the
    results.json it left in its run directory."""
    code, output = run_cli([*QUICK, *args, f"paths.root_dir={tmp_path}"], capsys)
    assert code == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    found = list((tmp_path / "outputs" / "runs").rglob("results.json"))
    assert len(found) == 1, found
    return errors[0], json.loads(found[0].read_text())


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["dataset.train_subset=abc"],
            ["dataset.train_subset must be null (all images) or a positive integer, got 'abc'"],
        ),
        (["dataset.train_subset=1.5"], ["dataset.train_subset must be null", "got 1.5"]),
        (["dataset.train_subset=0"], ["dataset.train_subset must be null", "got 0"]),
        (["dataset.test_subset=0"], ["dataset.test_subset must be null", "got 0"]),
        (["dataset.test_subset=-5"], ["dataset.test_subset must be null", "got -5"]),
        (
            ["dataset.train_subset=100000"],
            ["dataset.train_subset=100,000 is more than the 59,800 training images", "at most"],
        ),
        (
            ["dataset.val_size=59999"],  # with train_subset=500: only 1 image would be left
            ["dataset.train_subset=500 is more than the 1 training images left"],
        ),
        (["dataset.test_subset=20000"], ["dataset.test_subset=20,000 is more than the 10,000"]),
        (["optimizer.weight_decay=-0.1"], ["optimizer.weight_decay must be at least 0", "-0.1"]),
        (["seed=abc"], ["seed must be an integer from 0 to 4,294,967,295, got 'abc'"]),
        (["seed=1.5"], ["seed must be an integer", "got 1.5"]),
        (["seed=-1"], ["seed must be an integer", "got -1"]),
        (["loss.label_smoothing=1.0"], ["loss.label_smoothing must be a number from 0", "1.0"]),
        (["loss.label_smoothing=-0.1"], ["loss.label_smoothing must be", "got -0.1"]),
        (["loss.label_smoothing=abc"], ["loss.label_smoothing must be", "got 'abc'"]),
        (["optimizer.lr=nan"], ["optimizer.lr must be a positive number, got nan", "not finite"]),
        (["optimizer.lr=inf"], ["optimizer.lr must be a positive number, got inf", "not finite"]),
        (["optimizer.weight_decay=inf"], ["optimizer.weight_decay must be a finite number"]),
        (
            ["dataset.image_size=100000"],
            ["dataset.image_size=100000 is larger than 2048", "40.0 GB"],
        ),
        (
            ["ablation=[relu,sigmoid]"],
            [
                "ablation=[relu,sigmoid]: relu sets model.activation=relu and sigmoid sets "
                "model.activation=sigmoid",
                "Keep one of them",
            ],
        ),
        (
            ["ablation=[preact]"],
            [
                "ablation preact sets model.preact, which is a knob of "
                "cnnlab.models.resnet.ResNet (model=resnet18,",
                "cnnlab.models.lenet.LeNet, has no such knob",
                "drop preact from ablation=[...]",
            ],
        ),
        (["+model.preact=true"], ["model.preact is a knob of cnnlab.models.resnet.ResNet"]),
        (
            ["model.activation=swish"],
            ["unknown activation 'swish'", "so it is not dataset.image_size"],
        ),
        (["dataset.batch_size=-3"], ["dataset.batch_size must be a positive integer, got -3"]),
        (["dataset.eval_batch_size=0"], ["dataset.eval_batch_size must be a positive integer"]),
        (["dataset.val_size=70000"], ["dataset.val_size must be an integer from 0 to 59,999"]),
        (["dataset.val_size=abc"], ["dataset.val_size must be an integer", "got 'abc'"]),
        (["dataset.in_channels=0"], ["dataset.in_channels must be an integer from 1 to 3"]),
        (["dataset.augment=hflip"], ["dataset.augment must be a list of hflip, crop"]),
        (["dataset.normalize=maybe"], ["dataset.normalize must be true or false, got 'maybe'"]),
        (["compile=yes"], ["compile must be true or false, got 'yes'"]),
        (["deterministic=maybe"], ["deterministic must be true or false"]),
        (["optimizer=momentum", "optimizer.momentum=-1"], ["torch.optim.SGD refuses", "momentum"]),
        (["optimizer=momentum", "optimizer.momentum=abc"], ["optimizer.momentum must be a number"]),
        (["optimizer=adam", "+optimizer.betas=0.9"], ["optimizer.betas must be a list of 2"]),
        (["scheduler=step", "scheduler.step_size=0"], ["scheduler.step_size must be a positive"]),
        (["scheduler=step", "scheduler.gamma=abc"], ["scheduler.gamma must be a number"]),
        (
            ["scheduler=cosine", "trainer.max_epochs=-1", "++trainer.max_steps=3"],
            ["scheduler.T_max must be a positive integer, got -1", "trainer.max_epochs"],
        ),
        (["loss.aux_weight=-1"], ["loss.aux_weight must be a number of at least 0"]),
        (
            ["diagnostics.grad_norms=true", "diagnostics.grad_norms_every_n_steps=0"],
            ["diagnostics.grad_norms_every_n_steps must be a positive integer"],
        ),
    ],
)
def test_a_bad_value_is_one_paragraph_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragments: list[str]
) -> None:
    error, results = refused(tmp_path, capsys, *args)
    for fragment in fragments:
        assert fragment in error
    assert "cannot run on" not in error  # never blamed on the image size
    assert results["status"] == "failed" and "ConfigError" in results["error"]
    assert "epochs_completed" not in results  # stopped before anything trained


# --- the data files -------------------------------------------------------------------------------
def write_dataset(folder: Path, images: dict[str, int], labels: dict[str, list[int]]) -> None:
    """Small IDX files (raw, not gzipped: nothing goes through the decode cache)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, (kind, split) in IDX_FILES.items():
        if kind == "images":
            write_idx(folder / stem, torch.zeros(images[split], 28, 28, dtype=torch.uint8))
        else:
            write_idx(folder / stem, torch.tensor(labels[split], dtype=torch.uint8))


def test_labels_outside_the_classes_name_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "idx"
    write_dataset(data, {"train": 4, "test": 2}, {"train": [0, 3, 12, 9], "test": [1, 2]})
    error, results = refused(tmp_path, capsys, f"dataset.root={data}")
    assert f"{data / 'train-labels-idx1-ubyte'}: 1 labels fall outside 0..9 (e.g. 12)" in error
    assert "IDXFormatError" in results["error"]


def test_image_and_label_counts_that_differ_name_both_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "idx"
    write_dataset(data, {"train": 5, "test": 2}, {"train": [0, 1, 2, 3], "test": [1, 2]})
    error, results = refused(tmp_path, capsys, f"dataset.root={data}")
    assert f"{data / 'train-images-idx3-ubyte'} has 5 images but" in error
    assert f"{data / 'train-labels-idx1-ubyte'} has 4 labels" in error
    assert "IDXFormatError" in results["error"]


def test_python_m_cnnlab_data_names_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "idx"
    write_dataset(data, {"train": 2, "test": 2}, {"train": [0, 10], "test": [1, 2]})
    assert data_main.main(["--no-download", "--root", str(data), "mnist"]) == 1
    assert "labels fall outside 0..9" in capsys.readouterr().err


def test_a_given_root_that_does_not_exist_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-folder"
    error, _ = refused(tmp_path, capsys, f"dataset.root={missing}")
    assert f"dataset.root={missing} does not exist" in error
    assert "the only place cnnlab reads fashion_mnist from" in error


def test_a_given_root_with_three_of_four_files_names_the_missing_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "idx"
    data.mkdir()
    for stem in list(IDX_FILES)[:3]:
        (data / f"{stem}.gz").write_bytes(b"")
    error, _ = refused(tmp_path, capsys, "dataset=mnist", f"dataset.root={data}")
    assert f"{data} holds 3 of the 4 IDX files of mnist" in error
    assert "missing: t10k-labels-idx1-ubyte(.gz)" in error


@requires_mnist
def test_a_given_empty_root_is_downloaded_into_never_replaced_by_another_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty dataset.root gets the download (documented); when that fails the run stops,
    although $CNNLAB_DATA_PATH (the tests' MNIST) has the dataset."""
    assert data_sources.locate("mnist", None, download=False)  # the copy it must not take
    tried: list[str] = []

    def offline(root: str, **kwargs: object) -> None:
        tried.append(root)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no internet")

    monkeypatch.setattr("torchvision.datasets.MNIST", offline)
    empty = tmp_path / "empty"
    empty.mkdir()
    error, results = refused(tmp_path, capsys, "dataset=mnist", f"dataset.root={empty}")
    assert tried == [str(empty)]
    assert f"Dataset 'mnist' not found in dataset.root={empty}, the only place looked in" in error
    assert "no internet" in error and "DatasetNotFoundError" in results["error"]


@requires_mnist
def test_the_default_root_still_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Left at its default (data/ in the checkout), dataset.root is one place of several."""
    spec = dataclasses.replace(DATASETS["mnist"], offline_dirs=())
    monkeypatch.setitem(data_sources.DATASETS, "mnist", spec)
    found = data_sources.locate("mnist", tmp_path / "not-here", download=False)
    assert found in data_sources.candidate_dirs(spec, None)


# --- what ships passes ----------------------------------------------------------------------------
def _sweep_ablations(text: str) -> list[list[str]]:
    """``"[],[relu],[relu,dropout]"`` (an experiment's sweeper params) as lists."""
    return [[a for a in group.split(",") if a] for group in re.findall(r"\[([^\]]*)\]", text)]


def test_every_shipped_recipe_and_option_passes_the_checks() -> None:
    """No false alarm: each experiment (with each ablation set its sweep runs), model,
    optimizer, scheduler and debug option of conf/ passes check_config as it ships."""
    commands: list[list[str]] = []
    for path in sorted((project_root() / "experiments").glob("*.yaml")):
        commands.append([f"experiment={path.stem}"])
    for group in ("model", "optimizer", "scheduler", "debug"):
        commands += [[f"{group}={p.stem}"] for p in sorted((config_dir() / group).glob("*.yaml"))]
    for path in sorted((config_dir() / "ablation").glob("*.yaml")):
        commands.append([f"ablation=[{path.stem}]", f"model={_model_for(path.stem)}"])
    checked = 0
    for command in commands:
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=command, return_hydra_config=True)
        swept = (cfg.hydra.sweeper.get("params") or {}).get("ablation")
        variants = _sweep_ablations(swept) if swept else [[]]
        for ablations in variants:
            overrides = command + ([f"ablation=[{','.join(ablations)}]"] if ablations else [])
            GlobalHydra.instance().clear()
            with initialize_config_dir(str(config_dir()), version_base="1.3"):
                cfg = compose("train", overrides=overrides)
            with open_dict(cfg):
                cfg.paths.output_dir = "unused"
            check_config(cfg, overrides)
            checked += 1
    assert checked > 60


def _model_for(ablation: str) -> str:
    """A model the ablation applies to (its family's course model)."""
    return {
        "aux_heads": "googlenet",
        "factorized": "googlenet",
        "inception_resnet": "googlenet",
        "preact": "resnet18",
        "small_stem": "resnet18",
        "lrn_inter": "alexnet",
        "lrn_intra": "alexnet",
        "lrn_none": "alexnet",
    }.get(ablation, "lenet")


# --- cnnlab-visualize's own options ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        ("per_class=abc", "per_class must be >= 1 (an integer"),
        ("max_channels=0", "max_channels must be a positive integer, got 0"),
        ("classes=Pullover", "classes must be a non-empty list, got 'Pullover'"),
        ("classes=[]", "classes must be a non-empty list"),
        ("layers=features.0", "layers must be a non-empty list or null"),
        ("tensorboard=maybe", "tensorboard must be true or false"),
    ],
)
def test_visualize_options_are_checked_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, fragment: str
) -> None:
    argv = ["cnnlab-visualize", f"run_dir={tmp_path}", option, f"hydra.run.dir={tmp_path / 'o'}"]
    assert call_entry_point(visualize.main, argv) == 1
    output = capsys.readouterr().out
    assert "Traceback" not in output and f"error: {fragment}" in output
