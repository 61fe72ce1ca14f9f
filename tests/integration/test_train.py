"""The runner end to end on tiny real-data runs: results.json, logs, errors, optimizers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.cli.train import run
from cnnlab.errors import ConfigError
from cnnlab.training.lit import LitClassifier
from conftest import run_command

RESULT_KEYS = {
    "status",
    "test_acc",
    "test_loss",
    "val_acc",
    "train_loss",
    "train_acc",
    "epochs_completed",
    "params",
    "train_images_per_s",
    "validation_cost_pct",
    "wall_s",
    "device",
    "overrides",
    "config",
}


def test_switching_the_optimizer_gets_its_own_learning_rate(make_cfg) -> None:
    """The LeNet recipe's lr 0.9 is SGD's: optimizer=adam trains at Adam's default (0.001),
    not at 0.9 (which leaves Adam at chance), unless the command sets optimizer.lr."""
    assert make_cfg().optimizer.lr == 0.9
    assert make_cfg("optimizer=adam", "optimizer.lr=0.01").optimizer.lr == 0.01
    results = run(make_cfg("optimizer=adam", "dataset.train_subset=20000", "trainer.max_epochs=2"))
    assert results["config"]["optimizer"]["lr"] == 0.001
    assert results["status"] == "ok" and results["test_acc"] > 0.5


def test_fast_dev_run_through_compose(make_cfg) -> None:
    results = run(make_cfg("++trainer.fast_dev_run=true"))
    assert results["status"] == "ok" and results["validation_cost_pct"] > 0
    no_val = run(make_cfg("++trainer.fast_dev_run=true", "dataset.val_size=0"))
    assert no_val["validation_cost_pct"] is None
    assert results["params"] == 61_706


def test_short_real_run_learns_and_writes_results(make_cfg) -> None:
    cfg = make_cfg(
        "ablation=[relu,max_pool]",
        "optimizer.lr=0.1",
        "dataset.train_subset=10000",
        "dataset.batch_size=64",
    )
    results = run(cfg)
    assert results["test_acc"] > 0.6, results["test_acc"]  # chance is 0.1
    assert results["val_acc"] > 0.6

    run_dir = Path(cfg.paths.output_dir)
    written = json.loads((run_dir / "results.json").read_text())
    assert RESULT_KEYS <= set(written)
    assert written["status"] == "ok" and written["epochs_completed"] == 1
    assert (written["world_size"], written["global_batch_size"]) == (1, 64)
    assert written["test_acc"] == pytest.approx(results["test_acc"])
    assert 0 < written["train_loss"] < 2.3 and 0 < written["test_loss"] < 2.3
    assert written["train_images_per_s"] > 0 and written["wall_s"] > 0
    assert written["validation_cost_pct"] > 0  # 500 val images after 10,000 training images
    assert "cores" in written["device"] or "NVIDIA" in written["device"]
    assert written["config"]["model"]["activation"] == "relu"
    assert written["peak_memory_mb"] > 50  # the process holds at least the dataset
    assert written["config"]["dataset"]["train_subset"] == 10000
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_lbfgs_runs_through_lightning_closure(make_cfg) -> None:
    results = run(
        make_cfg(
            "optimizer=lbfgs", "++trainer.limit_train_batches=3", "ablation=[relu]", "test=false"
        )
    )
    assert results["status"] == "ok"
    assert results["train_loss"] is not None and results["train_loss"] < 2.5


def test_divergence_is_recorded_not_raised(make_cfg) -> None:
    results = run(make_cfg("ablation=[relu]", "optimizer.lr=1e8"))
    assert results["status"] == "diverged"
    assert results["diverged_epoch"] == 0 and results["test_acc"] is None


def test_image_size_below_minimum_names_it(make_cfg) -> None:
    with pytest.raises(ConfigError, match=r"smallest input this model accepts is 12x12"):
        run(make_cfg("dataset.image_size=8"))


def test_ddp_spawn_is_refused_with_the_alternative(make_cfg) -> None:
    with pytest.raises(ConfigError, match="use trainer=ddp .GPUs. or trainer=ddp_cpu"):
        run(make_cfg("++trainer.strategy=ddp_spawn"))


@pytest.mark.parametrize("lr", ["-0.1", "0"])
def test_bad_learning_rate(make_cfg, lr: str) -> None:
    with pytest.raises(ConfigError, match="optimizer.lr must be a positive number"):
        run(make_cfg(f"optimizer.lr={lr}"))


def test_aux_losses_are_added_in_training() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.main, self.aux = nn.Linear(4, 3), nn.Linear(4, 3)

        def forward(self, x: torch.Tensor):
            return (self.main(x), [self.aux(x)]) if self.training else self.main(x)

    net = TwoHeads()
    lit = LitClassifier(net, torch.optim.SGD, aux_weight=0.3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    loss = lit.training_step((x, y), 0)
    expected = F.cross_entropy(net.main(x), y) + 0.3 * F.cross_entropy(net.aux(x), y)
    assert torch.allclose(loss, expected)


def test_console_script_end_to_end(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("cnnlab-train")
    command = [
        str(exe),
        "dataset.train_subset=1000",
        "dataset.val_size=500",
        "dataset.test_subset=500",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path}",
    ]
    done = run_command(command)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["overrides"][0] == "dataset.train_subset=1000"
    assert str(tmp_path / "results.json") in done.stdout.replace("\n", "")
    assert "tensorboard --logdir" in done.stdout


def test_console_script_user_error_is_one_paragraph(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("cnnlab-train")
    done = run_command([str(exe), "dataset.image_size=4", f"hydra.run.dir={tmp_path}"])
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert "smallest input this model accepts is 12x12" in done.stdout
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


def test_divergence_flag_read_every_n_steps_keeps_the_first_bad_step() -> None:
    from cnnlab.training.lit import DivergedError

    lit = LitClassifier(nn.Linear(4, 3), torch.optim.SGD, divergence_check_every=5)
    losses = [1.0, 1.0, float("nan"), 2.0, float("inf")]
    with pytest.raises(DivergedError) as info:
        for step, value in enumerate(losses):
            lit._check_finite(torch.tensor(value), step, 100 + step)  # read at the 5th step only
        raise AssertionError("not raised")
    assert step == 4  # noticed at the read, not before
    assert info.value.step == 102  # but the first bad step is the one reported


def test_finite_losses_never_raise() -> None:
    lit = LitClassifier(nn.Linear(4, 3), torch.optim.SGD, divergence_check_every=2)
    for step in range(6):
        lit._check_finite(torch.tensor(0.5), step, step)
    assert int(lit._first_bad_step) == -1


def test_a_missing_optional_plugin_gets_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnlab.runs import sweep

    monkeypatch.setattr(sweep.importlib.util, "find_spec", lambda name: None)
    hint = sweep.missing_plugin(["-m", "experiment=lenet_improved", "hparams_search=lenet_optuna"])
    assert hint and "make install-optuna" in hint and "cnnlab[optuna]" in hint
    assert "make install-slurm" in sweep.missing_plugin(["-m", "hydra/launcher=slurm"])
    assert sweep.missing_plugin(["hparams_search=null", "model=vgg11"]) is None


def test_no_hydra_plugins_package_still_gets_the_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no Hydra plugin is installed there is no hydra_plugins package, and find_spec of
    one of its modules raises instead of returning None."""
    from cnnlab.runs import sweep

    extras = (("hparams_search=", "cnnlab_no_such_package.hydra_optuna_sweeper", "optuna"),)
    monkeypatch.setattr(sweep, "PLUGIN_EXTRAS", extras)
    assert "make install-optuna" in sweep.missing_plugin(["hparams_search=lenet_optuna"])
    assert not sweep.plugin_installed("optuna")


def test_extra_ddp_processes_of_a_sweep_use_rank_zeros_sweep_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cnnlab.runs import sweep

    args = ["-m", "seed=0,1", "hydra.sweep.dir=mine", 'hydra.run.dir="x"']
    monkeypatch.setenv(sweep.SWEEP_DIR_ENV, "/runs/sweep dir")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert sweep.follow_rank_zero_sweep(args) == args  # rank 0 keeps its command line
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert sweep.follow_rank_zero_sweep(args) == [
        "-m", "seed=0,1", 'hydra.run.dir="x"', 'hydra.sweep.dir="/runs/sweep dir"'
    ]  # fmt: skip
    assert sweep.follow_rank_zero_sweep(["seed=0"]) == ["seed=0"]  # not a sweep


def test_trainer_gets_the_cheap_no_op_profiler_unless_one_is_asked_for(
    make_cfg, tmp_path: Path
) -> None:
    from lightning.pytorch.profilers import SimpleProfiler

    from cnnlab.training.profiler import NoOpProfiler
    from cnnlab.training.trainer import make_trainer

    trainer = make_trainer(make_cfg(), tmp_path)
    assert isinstance(trainer.profiler, NoOpProfiler)
    with trainer.profiler.profile("a hook"), trainer.profiler.profile("a nested one"):
        pass
    asked = make_trainer(make_cfg("++trainer.profiler=simple"), tmp_path)
    assert isinstance(asked.profiler, SimpleProfiler)


def test_deterministic_runs_switch_cudnn_autotuning_off(make_cfg, tmp_path: Path) -> None:
    """trainer=gpu asks for cuDNN's benchmark mode; deterministic=true must win over it."""
    from cnnlab.training.trainer import make_trainer

    before = torch.backends.cudnn.benchmark
    try:
        make_trainer(make_cfg("++trainer.benchmark=true"), tmp_path)
        assert torch.backends.cudnn.benchmark is True
        make_trainer(make_cfg("++trainer.benchmark=true", "deterministic=true"), tmp_path)
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before


# LeNet-5 at 28 px: conv 6x28x28x(5x5), conv 16x10x10x(6x5x5), fc 400-120-84-10, two FLOPs a
# multiply-add (torch.utils.flop_counter's convention; pooling and activations not counted).
LENET_FLOPS = 2 * (6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 10)


@pytest.mark.parametrize("experiment", ["lenet", "alexnet", "vgg11", "googlenet", "resnet18"])
def test_model_summary_counts_the_flops_of_one_input_image(
    experiment: str, make_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summary printed as training starts shows each model's input and output sizes and the
    FLOPs of one image at the recipe's size (it said "Total FLOPs: 0" without an example)."""
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import model_summary
    from torch.utils.flop_counter import FlopCounterMode

    summaries = []
    real_summarize = model_summary.summarize

    def recording_summarize(*args: object, **kwargs: object):
        summaries.append(real_summarize(*args, **kwargs))
        return summaries[-1]

    monkeypatch.setattr(model_summary, "summarize", recording_summarize)
    cfg = make_cfg(
        f"experiment={experiment}",
        "trainer.enable_model_summary=true",
        "dataset.batch_size=4",
        "++trainer.limit_train_batches=1",
        "++trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "test=false",
    )
    assert run(cfg)["status"] == "ok"
    (summary,) = summaries
    size, channels = cfg.dataset.image_size, cfg.dataset.in_channels
    assert summary.in_sizes == [[1, channels, size, size]]
    assert summary.out_sizes == [[1, 10]]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        instantiate(cfg.model).eval()(torch.zeros(1, channels, size, size))
    assert summary.total_flops == counter.get_total_flops() > 0
    if experiment == "lenet":
        assert summary.total_flops == LENET_FLOPS


def test_log_graph_puts_the_model_graph_in_tensorboard(make_cfg) -> None:
    """logger.tensorboard.log_graph=true: Lightning traces the module on its example input (one
    blank image) into TensorBoard's Graphs tab; LeNet-5's two convolutions are in it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_cfg("logger.tensorboard.log_graph=true", "test=false")
    assert run(cfg)["status"] == "ok"
    events = EventAccumulator(str(Path(cfg.paths.output_dir) / "tensorboard"))
    events.Reload()
    convolutions = [n.name for n in events.Graph().node if n.op == "aten::_convolution"]
    assert len(convolutions) == 2 and all("LeNet[model]" in name for name in convolutions)


def test_debug_fast_runs_a_few_batches_of_everything(make_cfg) -> None:
    cfg = make_cfg("debug=fast", tiny=False)
    assert cfg.trainer.limit_train_batches == 5 and cfg.trainer.log_every_n_steps == 1
    results = run(make_cfg("debug=fast", "trainer.enable_progress_bar=false", tiny=False))
    assert results["status"] == "ok" and results["epochs_completed"] == 1
    assert results["test_acc"] is not None and results["val_acc"] is not None


def test_debug_overfit_trains_on_the_same_batch_every_epoch(make_cfg) -> None:
    from types import SimpleNamespace

    from cnnlab.training.build import build_datamodule

    cfg = make_cfg("debug=overfit")
    assert cfg.trainer.overfit_batches == 1
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    trainer = SimpleNamespace(
        overfit_batches=1, current_epoch=0, global_rank=0, world_size=1,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )  # fmt: skip
    datamodule.trainer = trainer
    loader = datamodule.train_dataloader()
    first = next(iter(loader))[1]
    trainer.current_epoch = 1
    assert torch.equal(next(iter(loader))[1], first)
    trainer.overfit_batches = 0  # a normal run shuffles every epoch
    assert not torch.equal(next(iter(datamodule.train_dataloader()))[1], first)


def test_tensorboard_hparams_tab_lists_the_metrics_that_compare_runs(make_cfg) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from cnnlab.training.trainer import HPARAM_METRICS

    results = run(make_cfg())
    events = EventAccumulator(results["tensorboard_dir"])
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    assert [m.name.tag for m in experiment.metric_infos] == list(HPARAM_METRICS)
    assert "test/acc" in events.Tags()["scalars"] and "hp_metric" in events.Tags()["scalars"]
    # The metrics' curves hold what the run logged, no dummy first value.
    assert [e.value for e in events.Scalars("test/acc")] == [pytest.approx(results["test_acc"])]


@pytest.mark.parametrize("loggers", ["csv", "[tensorboard,csv]"])
def test_csv_logger_alone_and_beside_tensorboard(make_cfg, loggers: str) -> None:
    results = run(make_cfg(f"logger={loggers}"))
    run_dir = Path(results["config"]["paths"]["output_dir"])
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/acc", "test/acc"} <= set(header)
    assert (results["tensorboard_dir"] is not None) == ("tensorboard" in loggers)


def test_train_log_holds_the_runs_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli_runner import run_cli
    from conftest import TINY

    run_dir = tmp_path / "run"
    code, output = run_cli([*TINY, f"hydra.run.dir={run_dir}"], capsys)
    assert code == 0, output
    log = (run_dir / "train.log").read_text()
    assert "LeNet (61,706 parameters) on fashion_mnist at 28 px" in log  # the config line
    assert "GPU available" in log  # Lightning's own set-up messages
    assert "epoch 1/1: train/loss=" in log and "val/acc=" in log
    results = json.loads((run_dir / "results.json").read_text())
    assert f"ok: test_acc={results['test_acc']:.4f}" in log and "results:" in log
    assert "ok: test_acc=" in output  # the console shows the same lines

    failed_dir = tmp_path / "failed"
    code, output = run_cli([*TINY, "optimizer.lr=-1", f"hydra.run.dir={failed_dir}"], capsys)
    assert code == 1 and "optimizer.lr must be a positive number" in output
    assert "error: optimizer.lr must be a positive number" in (failed_dir / "train.log").read_text()


def test_a_nan_validation_loss_ends_the_run_as_diverged_without_a_best_checkpoint(
    make_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_eval_step = LitClassifier._eval_step

    def nan_in_the_second_validation(self, stage, batch):
        real_eval_step(self, stage, batch)
        if self.current_epoch == 1:
            self.totals["val"].loss_sum.fill_(float("nan"))

    monkeypatch.setattr(LitClassifier, "_eval_step", nan_in_the_second_validation)
    results = run(make_cfg("trainer.max_epochs=3"))
    assert results["status"] == "diverged" and results["diverged_epoch"] == 1
    assert "validation loss became nan" in results["error"]
    folder = Path(results["config"]["paths"]["output_dir"]) / "checkpoints"
    assert [p.name for p in folder.glob("best-*.ckpt")] == ["best-epoch=0.ckpt"]


def test_results_say_how_many_test_images_and_the_true_global_batch(make_cfg) -> None:
    results = run(make_cfg("dataset.test_subset=300", "dataset.batch_size=100000"))
    assert results["test_images"] == 300
    assert results["global_batch_size"] == 2000  # the whole training split, not 100,000


def test_history_holds_every_steps_training_loss(make_cfg) -> None:
    results = run(make_cfg("trainer.max_epochs=2", "dataset.batch_size=100"))
    steps = results["history"]["train/loss_step"]
    assert len(steps) == 2 * 2000 // 100  # 20 steps an epoch, both epochs
    # The epoch's loss is the mean over its steps (every batch of 100 counts the same).
    epoch_losses = results["history"]["train/loss"]
    assert sum(steps[:20]) / 20 == pytest.approx(epoch_losses[0], rel=1e-5)
    assert sum(steps[20:]) / 20 == pytest.approx(epoch_losses[1], rel=1e-5)
