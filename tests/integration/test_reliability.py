"""Every bad input to ``cnnlab-train`` gets one clear paragraph and a non-zero exit, never a stack
trace, and nothing already in ``outputs/`` is overwritten or lost. Commands run in the test
process through the real Hydra entry point, with ``paths.root_dir`` pointing at a scratch
project whose ``outputs/`` holds an earlier run."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cli_runner import run_cli
from cnnlab.devices import gpu_available
from cnnlab.runs.checkpoints import META_KEY
from cnnlab.training import build
from conftest import QUICK


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A scratch project root whose outputs/ holds an earlier, finished run."""
    old = tmp_path / "outputs" / "runs" / "2020-01-01" / "00-00-00"
    (old / "checkpoints").mkdir(parents=True)
    (old / ".hydra").mkdir()
    (old / "results.json").write_text(json.dumps({"status": "ok", "test_acc": 0.9}))
    (old / "checkpoints" / "last.ckpt").write_bytes(b"an earlier run's checkpoint")
    (old / ".hydra" / "config.yaml").write_text("seed: 0\n")
    return tmp_path


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in (root / "outputs").rglob("*") if p.is_file()}


@pytest.fixture
def cli(project: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    """cli(*args) -> (exit status, output); afterwards every file that was in outputs/ before
    the command must be there unchanged."""
    checks: list[dict[Path, bytes]] = []

    def invoke(*args: str) -> tuple[int, str]:
        checks.append(snapshot(project))
        return run_cli([*args, f"paths.root_dir={project}"], capsys)

    yield invoke
    after = snapshot(project)
    for before in checks:
        for path, content in before.items():
            assert after.get(path) == content, f"{path} was changed or removed"


def assert_one_paragraph(code: int, output: str, *fragments: str) -> None:
    assert code == 1, output
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, output


def new_failed_run(project: Path) -> dict:
    """The results.json of the one run dir the failed command created."""
    found = [
        p for p in (project / "outputs" / "runs").rglob("results.json") if "2020" not in str(p)
    ]
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        (
            "model=lenet6",
            ["Could not find 'model/lenet6'", "Available options in 'model'", "vgg16"],
        ),
        ("experiment=no_such_item", ["Available options in 'experiment'", "alexnet", "lenet"]),
        ("optimizer.momentun=0.9", ["Could not override 'optimizer.momentun'", "not in struct"]),
    ],
)
def test_unknown_name_lists_the_choices(cli, project: Path, override: str, fragments) -> None:
    code, output = cli(override)
    assert_one_paragraph(code, output, *fragments)
    # Hydra stops before a run dir exists: outputs/ holds only the earlier run.
    assert len(list((project / "outputs").rglob("results.json"))) == 1


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("optimizer.lr=fast", "optimizer.lr must be a positive number, got 'fast'"),
        ("optimizer.lr=-0.1", "optimizer.lr must be a positive number, got -0.1"),
        ("dataset.batch_size=0", "dataset.batch_size must be a positive integer, got 0"),
        ("dataset.image_size=0", "dataset.image_size must be a positive integer, got 0"),
        ("trainer.max_epochs=ten", "trainer.max_epochs must be an integer, got 'ten'"),
        ("trainer.max_epochs=-5", "max_epochs` must be a non-negative integer or -1"),
    ],
)
def test_value_of_wrong_type_or_range(cli, project: Path, override: str, fragment: str) -> None:
    code, output = cli(*QUICK, override)
    assert_one_paragraph(code, output, fragment)
    assert new_failed_run(project)["status"] == "failed"


def test_missing_dataset_names_the_three_ways_to_get_it(
    cli, project: Path, no_mnist: None
) -> None:
    code, output = cli("dataset=mnist", *QUICK)
    assert_one_paragraph(code, output, "Dataset 'mnist' not found", "(1)", "(2)", "(3)")
    assert "DatasetNotFoundError" in new_failed_run(project)["error"]


def test_truncated_idx_file_is_named(cli, project: Path) -> None:
    data = project / "idx"
    data.mkdir()
    images = data / "train-images-idx3-ubyte"
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">III", 60_000, 28, 28)
    images.write_bytes(header + bytes(100_000))  # a download cut short
    for stem in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (data / stem).write_bytes(b"")
    code, output = cli(f"dataset.root={data}", *QUICK)
    assert_one_paragraph(code, output, f"{images}: truncated", "(60000, 28, 28)")


@pytest.mark.parametrize("target", ["empty", "missing", "sweep"])
def test_resume_without_a_checkpoint(cli, project: Path, target: str) -> None:
    run_dir = project / "outputs" / "runs" / "2020-01-01" / "00-00-01"
    if target != "missing":
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps({"status": "failed", "error": "x"}))
    if target == "sweep":
        (run_dir / "multirun.yaml").write_text("hydra: {}\n")
    code, output = cli(f"resume={run_dir}")
    expected = {
        "empty": f"resume={run_dir}: no checkpoint in {run_dir / 'checkpoints'}",
        "missing": f"resume={run_dir}: no such directory",
        "sweep": "is a sweep directory. Continue a sweep by running the same -m command",
    }[target]
    assert_one_paragraph(code, output, expected)
    assert not (run_dir / "traceback.txt").exists()  # the failure went to a fresh run dir


@pytest.fixture
def lenet_run(project: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A real (two-step) LeNet run with checkpoints, made through the CLI."""
    run_dir = project / "outputs" / "runs" / "lenet"
    code, output = run_cli([*QUICK, f"hydra.run.dir={run_dir}"], capsys)
    assert code == 0, output
    return run_dir


def test_checkpoint_of_another_model_names_the_model_it_was_made_for(
    lenet_run: Path, cli, project: Path
) -> None:
    code, output = cli(f"resume={lenet_run}", "model=alexnet28")
    assert_one_paragraph(
        code, output, "was made for model=lenet (cnnlab.models.lenet.LeNet)", "model=alexnet28"
    )
    # A knob that changes the architecture: the weights are compared, the message is the same.
    code, output = cli(f"resume={lenet_run}", "model.conv_channels=[8,16]")
    assert_one_paragraph(
        code,
        output,
        "was made for model=lenet (cnnlab.models.lenet.LeNet), which does not fit",
        "is [6] there, [8] here",
    )
    assert json.loads((lenet_run / "results.json").read_text())["status"] == "ok"


class NotAWeight:
    """Any Python object: pickled into a checkpoint, it would run code when unpickled."""


def test_checkpoint_with_pickled_objects_is_refused(lenet_run: Path, cli, project: Path) -> None:
    saved = torch.load(lenet_run / "checkpoints" / "last.ckpt", weights_only=True)
    saved[META_KEY] = {"config": NotAWeight()}
    unsafe = project / "unsafe.ckpt"
    torch.save(saved, unsafe)
    code, output = cli(f"ckpt_path={unsafe}")
    assert_one_paragraph(code, output, f"checkpoint {unsafe} holds pickled Python objects")


def test_a_crash_in_a_single_run_exits_non_zero_with_the_message(
    cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(cfg):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(build, "check_image_size", crash)
    code, output = cli(*QUICK)
    assert code == 1 and "RuntimeError: simulated crash" in output
    results = new_failed_run(project)
    assert results["status"] == "failed" and results["error"] == "RuntimeError: simulated crash"
    traceback_files = list((project / "outputs" / "runs").rglob("traceback.txt"))
    assert len(traceback_files) == 1 and "simulated crash" in traceback_files[0].read_text()


@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_a_gpu_trainer_on_a_machine_without_one(cli, project: Path, trainer: str) -> None:
    """What `make course-recipes` (trainer=gpu) says on a CPU-only machine."""
    code, output = cli(*QUICK, f"trainer={trainer}")
    assert_one_paragraph(code, output, "needs a GPU, and PyTorch sees none", "QUICK=1")


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("+optimizer.learningrate=0.1", ("optimizer.learningrate", "Did you mean optimizer.lr?")),
        ("+model.activaton=relu", ("model.activaton", "Did you mean model.activation?")),
        ("+dataset.batchsize=64", ("dataset.batchsize", "Did you mean dataset.batch_size?")),
    ],
)
def test_an_unknown_argument_names_the_valid_keys_and_the_closest(
    cli, project: Path, override: str, fragments: tuple[str, ...]
) -> None:
    code, output = cli(*QUICK, override)
    assert_one_paragraph(code, output, *fragments, "Its arguments:")
    assert new_failed_run(project)["status"] == "failed"
