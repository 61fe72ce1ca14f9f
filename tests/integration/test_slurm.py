"""``hydra/launcher=slurm``: the config composes, Hydra instantiates the submitit launcher from it,
and the sweep it would submit asks SLURM for the right resources. Nothing is submitted: the
executor is caught at ``map_array`` (the submission), and ``srun`` is pretended present."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.types import HydraContext

from conftest import CONF_DIR

submitit = pytest.importorskip("submitit", reason="pip install 'cnnlab[slurm]'")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install 'cnnlab[slurm]'")


def submit_sweep(overrides: list[str], jobs: list[list[str]], sweep_dir: Path) -> dict[str, Any]:
    """Compose with ``overrides``, let Hydra build the launcher, launch ``jobs`` and return what
    would have been submitted: the submitit executor and the sbatch script of one job."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            ["hydra/launcher=slurm", f"hydra.sweep.dir={sweep_dir}", *overrides],
            return_hydra_config=True,  # the launcher is configured in the hydra node
        )
    launcher = Plugins.instance().instantiate_launcher(
        hydra_context=HydraContext(config_loader=None, callbacks=Callbacks()),
        task_function=lambda _cfg: None,
        config=cfg,
    )
    submitted: dict[str, Any] = {}

    def catch_submission(executor: Any, function: Any, *job_args: Any) -> list:
        submitted.update(executor=executor, launcher=function, overrides=job_args[0])
        return []

    with (
        mock.patch.object(submitit.AutoExecutor, "map_array", catch_submission),
        mock.patch.object(submitit.SlurmExecutor, "affinity", return_value=1),
    ):
        launcher.launch(jobs, initial_job_idx=0)
    slurm = submitted["executor"]._executor
    submitted["parameters"] = slurm.parameters
    submitted["sbatch"] = slurm._make_submission_file_text("python -m submitit.core._submit", "0")
    return submitted


def test_sweep_of_ddp_jobs_asks_for_one_task_per_gpu(tmp_path: Path) -> None:
    jobs = [["model=resnet18", "trainer=ddp"], ["model=resnet50", "trainer=ddp"]]
    submitted = submit_sweep(
        ["trainer=ddp", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90"],
        jobs,
        tmp_path / "sweep",
    )
    # Hydra loads plugins itself (a module object of its own), so compare by name.
    assert type(submitted["launcher"]).__qualname__ == "SlurmLauncher"
    assert list(submitted["overrides"]) == jobs
    params = submitted["parameters"]
    assert params["partition"] == "gpu"
    assert params["time"] == 90
    assert params["nodes"] == 1
    # Lightning refuses to start unless SLURM runs exactly one task per device.
    assert params["gpus_per_node"] == params["ntasks_per_node"] == 4
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=4", "--ntasks-per-node=4"):
        assert f"#SBATCH {line}\n" in submitted["sbatch"]
    assert str(tmp_path / "sweep" / ".submitit") in submitted["sbatch"]


def test_multinode_jobs_take_their_node_count_from_the_trainer(tmp_path: Path) -> None:
    submitted = submit_sweep(
        ["trainer=multinode", "trainer.num_nodes=3", "hydra.launcher.gpus_per_node=8"],
        [["model=vgg16"]],
        tmp_path / "sweep",
    )
    params = submitted["parameters"]
    assert (params["nodes"], params["gpus_per_node"], params["ntasks_per_node"]) == (3, 8, 8)
    assert "#SBATCH --nodes=3\n" in submitted["sbatch"]
    assert "partition" not in params  # null: the cluster's default partition


def test_cluster_specific_sbatch_options_pass_through(tmp_path: Path) -> None:
    submitted = submit_sweep(
        [
            "hydra.launcher.account=proj42",
            "+hydra.launcher.additional_parameters.mail-type=END",
            "hydra.launcher.setup=[module load cuda]",
        ],
        [["model=lenet"]],
        tmp_path / "sweep",
    )
    sbatch = submitted["sbatch"]
    assert "#SBATCH --account=proj42\n" in sbatch
    assert "#SBATCH --mail-type=END\n" in sbatch
    assert "module load cuda\n" in sbatch
