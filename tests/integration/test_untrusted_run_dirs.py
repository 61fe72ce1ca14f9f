"""Nothing read from a run directory is executed (issue 19, section 1).

Run directories and checkpoints are handed around (instructors share models, students resume each
other's runs), so every file a run directory holds is input from a stranger: a checkpoint that
passes ``torch.load(weights_only=True)`` can still carry a config whose ``_target_`` names any
callable. The attack here is ``_target_: os.makedirs`` with a directory of the test's own: the
directory appearing would prove that the run directory chose what got run. Every command that
reads a run directory (cnnlab-train resume= / ckpt_path= / resume_sweep=true, cnnlab-eval,
cnnlab-visualize) is tried with every file that can carry it (a checkpoint's ``cnnlab`` entry,
results.json, ``.hydra/*.yaml``); each refuses with one paragraph and exit status 1, or, where a
command never reads the file, runs normally without executing anything.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from cli_runner import call_entry_point, run_cli
from cnnlab.cli import evaluate, train, visualize
from cnnlab.errors import ConfigError
from cnnlab.runs.checkpoints import META_KEY
from cnnlab.runs.rebuild import check_stored_config, shipped_resolvers, shipped_targets
from conftest import TINY


def attack(marker: Path) -> dict[str, Any]:
    """A config node that creates ``marker`` when Hydra instantiates it."""
    return {"_target_": "os.makedirs", "name": str(marker)}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeNet trained for one tiny epoch through cnnlab-train: results.json, checkpoints and
    .hydra/ as a real run writes them."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    argv = ["cnnlab-train", *TINY, f"hydra.run.dir={run_dir}"]
    assert call_entry_point(train.cli, argv) == 0
    return run_dir


@pytest.fixture
def copied_run(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the trained run that a test may tamper with (and resume into)."""
    copy = tmp_path / "copied_run"
    shutil.copytree(trained_run, copy)
    return copy


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "created-by-the-run-directory"


def tamper_checkpoint(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite ``path`` with ``change`` applied to its ``cnnlab`` entry; plain dicts and strings
    only, so the file still passes torch.load(weights_only=True)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    change(checkpoint[META_KEY])
    torch.save(checkpoint, path)
    assert torch.load(path, map_location="cpu", weights_only=True)[META_KEY] is not None


def tamper_results(run_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = run_dir / "results.json"
    results = json.loads(path.read_text())
    change(results)
    path.write_text(json.dumps(results))


def one_error_line(code: int, output: str) -> str:
    """The one 'error: ...' line of a refused command (exit status 1, no traceback)."""
    assert code == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    return errors[0]


def run_eval(args: list[str], out_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = call_entry_point(evaluate.main, ["cnnlab-eval", *args, f"hydra.run.dir={out_dir}"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def run_visualize(
    args: list[str], out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    argv = ["cnnlab-visualize", *args, "tensorboard=false", f"hydra.run.dir={out_dir}"]
    code = call_entry_point(visualize.main, argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# --- the allowlist --------------------------------------------------------------------------------
def test_the_allowlist_is_what_conf_ships() -> None:
    targets = shipped_targets()
    assert {
        "cnnlab.models.lenet.LeNet",
        "cnnlab.models.resnet.ResNet",
        "cnnlab.data.IDXDataModule",
        "torch.optim.SGD",
        "torch.optim.lr_scheduler.StepLR",
        "lightning.pytorch.loggers.TensorBoardLogger",
        "cnnlab.runs.sweep.SweepReport",
    } <= targets
    assert not {"os.makedirs", "torch.load", "builtins.eval", "subprocess.run"} & targets
    resolvers = shipped_resolvers()
    assert {"oc.select", "cnnlab_root", "cnnlab_job_label"} <= resolvers
    assert not {"oc.decode", "oc.create", "oc.env"} & resolvers


def test_a_real_runs_stored_config_passes(trained_run: Path) -> None:
    checkpoint = torch.load(
        trained_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    stored = checkpoint[META_KEY]["config"]
    assert "${" in json.dumps(stored)  # unresolved, interpolations and all
    check_stored_config(stored, "last.ckpt")
    check_stored_config(json.loads((trained_run / "results.json").read_text())["config"], "r")


@pytest.mark.parametrize(
    ("where", "payload", "fragment"),
    [
        ("model", {"_target_": "os.makedirs", "name": "x"}, "model._target_"),
        ("model", {"_target_": "torch.load", "f": "x.pt", "weights_only": False}, "torch.load"),
        ("trainer", {"callbacks": [{"_target_": "os.system", "command": "x"}]}, "callbacks.0"),
        ("model", {"_target_": "${oc.select:x,os.makedirs}"}, "model._target_"),
        ("model", {"_target_": ["os.makedirs"]}, "model._target_"),
        ("model", {"activation": "${oc.decode:'{_target_: os.makedirs, name: x}'}"}, "oc.decode"),
        ("model", {"activation": "${oc.select:x,'${oc.create:{a: 1}}'}"}, "oc.create"),
        ("model", {"activation": "${oc.env:HOME}"}, "oc.env"),
        ("model", {"activation": "${${name}:x}"}, "${name}"),
        ("model", {"activation": "${oc.decode:"}, "not a valid interpolation"),
    ],
)
def test_stored_config_with_a_foreign_target_or_resolver_is_refused(
    trained_run: Path, where: str, payload: dict[str, Any], fragment: str
) -> None:
    stored = json.loads((trained_run / "results.json").read_text())["config"]
    stored[where] = stored[where] | payload
    with pytest.raises(ConfigError) as info:
        check_stored_config(stored, "some.ckpt")
    message = str(info.value)
    assert fragment in message and "some.ckpt" in message and "\n" not in message


# --- a checkpoint's cnnlab entry ------------------------------------------------------------------
PAYLOADS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "config target": lambda meta, m: meta["config"].update(model=attack(m)),
    "config resolver": lambda meta, m: meta["config"]["model"].update(
        activation=f"${{oc.decode:'{{_target_: os.makedirs, name: {m}}}'}}"
    ),
    "overrides": lambda meta, m: meta["overrides"].append("+model.x={_target_:os.makedirs}"),
    "choices": lambda meta, m: meta.update(choices={"model": "../../../evil"}),
}


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_resume_refuses_a_tampered_checkpoint(
    copied_run: Path, marker: Path, payload: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper_checkpoint(
        copied_run / "checkpoints" / "last.ckpt", lambda meta: PAYLOADS[payload](meta, marker)
    )
    code, output = run_cli([f"resume={copied_run}", "trainer.max_epochs=2"], capsys)
    error = one_error_line(code, output)
    assert str(copied_run / "checkpoints" / "last.ckpt") in error and "refused" in error
    assert not marker.exists()


@pytest.mark.parametrize(
    "command", ["cnnlab-train ckpt_path=", "cnnlab-eval ckpt_path=", "cnnlab-visualize checkpoint="]
)
def test_every_command_refuses_a_checkpoint_whose_config_names_a_foreign_target(
    trained_run: Path,
    tmp_path: Path,
    marker: Path,
    command: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tampered = tmp_path / "shared.ckpt"  # a checkpoint handed around on its own
    shutil.copy(trained_run / "checkpoints" / "last.ckpt", tampered)
    tamper_checkpoint(tampered, lambda meta: meta["config"].update(model=attack(marker)))
    program, key = command.split(" ")
    if program == "cnnlab-train":
        code, output = run_cli(
            [f"{key}{tampered}", "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'out'}"],
            capsys,
        )
    elif program == "cnnlab-eval":
        code, output = run_eval([f"{key}{tampered}", "device=cpu"], tmp_path / "out", capsys)
    else:
        code, output = run_visualize([f"{key}{tampered}"], tmp_path / "out", capsys)
    error = one_error_line(code, output)
    assert str(tampered) in error and "model._target_" in error and "os.makedirs" in error
    assert not marker.exists()


def test_visualize_refuses_a_tampered_checkpoint_inside_its_run_directory(
    copied_run: Path, tmp_path: Path, marker: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for checkpoint in (copied_run / "checkpoints").glob("*.ckpt"):
        tamper_checkpoint(checkpoint, lambda meta: meta["config"].update(model=attack(marker)))
    last = copied_run / "checkpoints" / "last.ckpt"
    for args in ([f"run_dir={copied_run}"], [f"checkpoint={last}"]):
        code, output = run_visualize(args, tmp_path / "out", capsys)
        assert "os.makedirs" in one_error_line(code, output)
    assert not marker.exists()


# --- results.json ---------------------------------------------------------------------------------
RESULTS_PAYLOADS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "config": lambda results, m: results["config"].update(model=attack(m)),
    "overrides": lambda results, m: results["overrides"].append("model._target_=os.makedirs"),
}


@pytest.mark.parametrize("payload", list(RESULTS_PAYLOADS))
@pytest.mark.parametrize("program", ["cnnlab-eval", "cnnlab-visualize"])
def test_eval_and_visualize_refuse_a_tampered_results_json(
    copied_run: Path,
    tmp_path: Path,
    marker: Path,
    payload: str,
    program: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tamper_results(copied_run, lambda results: RESULTS_PAYLOADS[payload](results, marker))
    runner = run_eval if program == "cnnlab-eval" else run_visualize
    code, output = runner([f"run_dir={copied_run}"], tmp_path / "out", capsys)
    error = one_error_line(code, output)
    assert str(copied_run / "results.json") in error and "os.makedirs" in error
    assert not marker.exists()
    assert not (tmp_path / "out" / "eval.json").exists()


@pytest.mark.parametrize("payload", [*RESULTS_PAYLOADS, "overrides not a list"])
def test_resume_sweep_refuses_a_tampered_results_json(
    copied_run: Path, marker: Path, payload: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """resume_sweep=true reads a finished job's results.json to skip it: the requeue command of
    a preempted SLURM job, run here for one run with a fixed run directory."""
    if payload == "overrides not a list":
        tamper_results(copied_run, lambda results: results.update(overrides=7))
    else:
        tamper_results(copied_run, lambda results: RESULTS_PAYLOADS[payload](results, marker))
    overrides = json.loads((copied_run / "results.json").read_text())["overrides"]
    same_command = overrides if isinstance(overrides, list) else TINY
    same_command = [o for o in same_command if "_target_" not in o]
    code, output = run_cli(
        [*same_command, f"hydra.run.dir={copied_run}", "resume_sweep=true"], capsys
    )
    error = one_error_line(code, output)
    assert str(copied_run / "results.json") in error
    assert not marker.exists()


# --- .hydra/ --------------------------------------------------------------------------------------
def test_the_hydra_snapshot_is_never_read(
    copied_run: Path, tmp_path: Path, marker: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No command reads .hydra/config.yaml or overrides.yaml: with both tampered, resume=,
    cnnlab-eval and cnnlab-visualize run as usual and nothing is executed."""
    snapshot = copied_run / ".hydra"
    config = yaml.safe_load((snapshot / "config.yaml").read_text())
    config["model"] = attack(marker)
    (snapshot / "config.yaml").write_text(yaml.safe_dump(config))
    (snapshot / "overrides.yaml").write_text(
        yaml.safe_dump(["model._target_=os.makedirs", f"+model.name={marker}"])
    )

    code, output = run_eval([f"run_dir={copied_run}", "device=cpu"], tmp_path / "eval", capsys)
    assert code == 0, output
    code, output = run_visualize([f"run_dir={copied_run}"], tmp_path / "visualize", capsys)
    assert code == 0, output
    code, output = run_cli([f"resume={copied_run}", "trainer.max_epochs=2"], capsys)
    assert code == 0, output
    assert json.loads((copied_run / "results.json").read_text())["epochs_completed"] == 2
    assert not marker.exists()


# --- a damaged cnnlab entry -----------------------------------------------------------------------
DAMAGE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "config not a mapping": (lambda meta: meta.update(config="x"), "is not a mapping"),
    "config empty": (lambda meta: meta.update(config={}), "has no model, dataset, optimizer"),
    "model not a group": (lambda meta: meta["config"].update(model=5), "has no model section"),
    "overrides not a list": (lambda meta: meta.update(overrides="seed=1"), "not a list of"),
    "choices not a mapping": (lambda meta: meta.update(choices=["x"]), "not a mapping"),
    "seed not a number": (lambda meta: meta["config"].update(seed="abc"), "seed must be an"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_of_a_damaged_checkpoint_is_one_paragraph(
    copied_run: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    change, fragment = DAMAGE[damage]
    tamper_checkpoint(copied_run / "checkpoints" / "last.ckpt", change)
    code, output = run_cli([f"resume={copied_run}", "trainer.max_epochs=2"], capsys)
    assert fragment in one_error_line(code, output)


# --- Hydra's pickled rerun ------------------------------------------------------------------------
class MakesADirectory:
    """Unpickled, it calls os.makedirs: what a tampered .hydra/config.pickle could hold."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.makedirs, (self.path,)


def test_hydras_pickled_rerun_is_refused(
    copied_run: Path, tmp_path: Path, marker: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hydra's --experimental-rerun unpickles .hydra/config.pickle; cnnlab never writes that
    file, and a run directory that holds one is not to be trusted."""
    pickled = copied_run / ".hydra" / "config.pickle"
    pickled.write_bytes(pickle.dumps(MakesADirectory(marker)))
    for flag in (["--experimental-rerun", str(pickled)], [f"--experimental-rerun={pickled}"]):
        code = call_entry_point(visualize.main, ["cnnlab-visualize", *flag])
        output = capsys.readouterr()
        assert code == 1 and "error: --experimental-rerun is refused" in output.err
        assert not marker.exists()
