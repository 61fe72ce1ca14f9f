"""cnnlab-eval on a tiny trained LeNet: it reproduces the run's own test pass exactly, writes
eval.json and the confusion-matrix figure; the training run records the same per-class numbers;
a run directory or checkpoint whose overrides would choose what gets instantiated is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.image
import pytest
import torch
from hydra._internal.instantiate import _instantiate2
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cli_runner import call_entry_point
from cnnlab.analysis.confusion import overall_accuracy, worst_confusion
from cnnlab.cli import evaluate, train
from cnnlab.data.sources import DATASETS
from conftest import TINY

CLASSES = list(DATASETS["fashion_mnist"].classes)
PER_CLASS_TEST_IMAGES = 1000  # Fashion-MNIST's test split: 10 classes x 1,000 images


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeNet (ReLU, max-pool) trained for one epoch on 2,000 images and tested on the full test
    split, through cnnlab-train's entry point so results.json records the overrides."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    args = [
        *TINY,
        "dataset.test_subset=null",
        "ablation=[relu,max_pool]",
        "optimizer.lr=0.1",
        "dataset.batch_size=64",
        f"hydra.run.dir={run_dir}",
    ]
    assert call_entry_point(train.cli, ["cnnlab-train", *args]) == 0
    return run_dir


def run_eval(args: list[str], out_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit status, output) of ``cnnlab-eval *args`` writing into ``out_dir``."""
    code = call_entry_point(evaluate.main, ["cnnlab-eval", *args, f"hydra.run.dir={out_dir}"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def instantiated(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every target Hydra instantiates during the test."""
    made: list[str] = []
    original = _instantiate2._resolve_target

    def record(target, full_key):  # noqa: ANN001, ANN202 - Hydra's private signature
        made.append(str(target))
        return original(target, full_key)

    monkeypatch.setattr(_instantiate2, "_resolve_target", record)
    return made


def test_eval_reproduces_the_runs_test_pass(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = run_eval([f"run_dir={trained_run}", "device=cpu"], tmp_path, capsys)
    assert code == 0, output
    results = json.loads((trained_run / "results.json").read_text())
    report = json.loads((tmp_path / "eval.json").read_text())

    assert report["test_acc"] == results["test_acc"]  # exactly: the same test pass
    assert report["test_loss"] == pytest.approx(results["test_loss"], rel=1e-6)
    assert report["checkpoint"] == str(trained_run / "checkpoints" / "best-epoch=0.ckpt")
    assert report["run_dir"] == str(trained_run) and report["overrides"] == results["overrides"]
    assert report["config_drift"] == []

    matrix = report["confusion_matrix"]
    assert len(matrix) == 10 and all(len(row) == 10 for row in matrix)
    assert report["test_images"] == sum(map(sum, matrix)) == 10_000
    assert [sum(row) for row in matrix] == [PER_CLASS_TEST_IMAGES] * 10
    assert matrix == results["confusion_matrix"]
    assert report["classes"] == CLASSES and list(report["per_class_acc"]) == CLASSES
    assert overall_accuracy(matrix) == report["test_acc"]

    height, width = matplotlib.image.imread(tmp_path / "confusion_matrix.png").shape[:2]
    assert height > 300 and width > 300
    true, predicted, count = worst_confusion(matrix, CLASSES)
    assert f"{true} -> {predicted}: {count}" in output
    assert str(tmp_path / "eval.json") in output and "confusion_matrix.png" in output


def test_training_run_records_per_class_accuracy_and_confusion(trained_run: Path) -> None:
    results = json.loads((trained_run / "results.json").read_text())
    matrix = results["confusion_matrix"]
    assert sum(map(sum, matrix)) == 10_000
    trace = sum(matrix[i][i] for i in range(10))
    assert trace / 10_000 == results["test_acc"]
    assert results["per_class_acc"] == {
        name: matrix[i][i] / sum(matrix[i]) for i, name in enumerate(CLASSES)
    }

    events = EventAccumulator(str(trained_run / "tensorboard"))
    events.Reload()
    assert "test/confusion_matrix" in events.Tags()["images"]
    scalars = set(events.Tags()["scalars"])
    assert {"test/acc_T-shirt_top", "test/acc_Ankle_boot", "test/acc_Shirt"} <= scalars
    shirt = events.Scalars("test/acc_Shirt")[-1].value
    assert shirt == pytest.approx(results["per_class_acc"]["Shirt"])


def test_checkpoint_alone(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    code, output = run_eval([f"ckpt_path={checkpoint}", "device=cpu"], tmp_path, capsys)
    assert code == 0, output
    report = json.loads((tmp_path / "eval.json").read_text())
    results = json.loads((trained_run / "results.json").read_text())
    assert report["test_acc"] == results["test_acc"]  # one epoch: last.ckpt = the final weights
    assert report["checkpoint"] == str(checkpoint) and report["run_dir"] == str(trained_run)
    assert report["overrides_from"].endswith("(cnnlab entry)")
    assert report["overrides"] == results["overrides"]


def one_paragraph_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, output
    assert "Traceback" not in output
    return errors[0]


def test_results_json_override_with_a_target_is_refused(
    trained_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    instantiated: list[str],
) -> None:
    run_dir = tmp_path / "copied_run"
    shutil.copytree(trained_run, run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    results["overrides"].append("model._target_=os.getcwd")
    (run_dir / "results.json").write_text(json.dumps(results))

    code, output = run_eval([f"run_dir={run_dir}"], tmp_path / "eval", capsys)
    assert code == 1
    error = one_paragraph_error(output)
    assert "'model._target_=os.getcwd'" in error and "refused" in error
    assert instantiated == []
    assert not (tmp_path / "eval" / "eval.json").exists()


def test_checkpoint_override_with_a_target_is_refused(
    trained_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    instantiated: list[str],
) -> None:
    checkpoint = torch.load(
        trained_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    checkpoint["cnnlab"]["overrides"].append("+model.activation={_target_:os.getcwd}")
    tampered = tmp_path / "tampered.ckpt"
    torch.save(checkpoint, tampered)

    code, output = run_eval([f"ckpt_path={tampered}"], tmp_path / "eval", capsys)
    assert code == 1
    error = one_paragraph_error(output)
    assert "'+model.activation={_target_:os.getcwd}'" in error
    assert instantiated == []


def test_missing_run_dir_is_one_paragraph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = run_eval([f"run_dir={tmp_path / 'nope'}"], tmp_path / "eval", capsys)
    assert code == 1
    assert "no such directory" in one_paragraph_error(output)
    code, output = run_eval([], tmp_path / "eval2", capsys)
    assert code == 1
    assert "run_dir=" in one_paragraph_error(output)
