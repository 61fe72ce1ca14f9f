"""The benchmark script runs end to end on a tiny setting and reports every figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnlab.cli import bench
from conftest import compose_config


def test_bench_runs_and_reports(tmp_path: Path) -> None:
    assert (
        bench.main(
            [
                "--steps",
                "3",
                "--repeats",
                "1",
                "--no-startup",
                "--floor",
                "--batch-size",
                "64",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "bench.json").read_text())
    assert "cores" in report["device"] or "NVIDIA" in report["device"]
    (case,) = report["cases"]
    assert (case["model"], case["image_size"], case["batch_size"], case["steps"]) == (
        "lenet",
        28,
        64,
        3,
    )
    assert all(rate > 0 for rate in case["images_per_s"].values())
    assert set(case["images_per_s"]) == {"reference", "cnnlab_data", "runner", "lightning_floor"}
    assert isinstance(case["lightning_floor_overhead_pct"], float)
    expected = case["images_per_s"]["cnnlab_data"] / case["images_per_s"]["reference"]
    assert abs(case["data_path_speedup_b_over_a"] - expected) < 0.01
    # One repeat: the per-step overhead is that repeat's, from the same two rates.
    ips = case["all_runs"]
    b, c = ips["cnnlab_data"][0], ips["runner"][0]
    # bench.json rounds the rates; on a slow (busy) machine 1/c magnifies that rounding.
    assert case["framework_overhead_ms_per_step"] == pytest.approx(
        1000 * 64 * (1 / c - 1 / b), rel=1e-3, abs=0.01
    )
    assert isinstance(case["lightning_floor_overhead_ms_per_step"], float)


def test_overhead_a_step_is_the_median_extra_time_of_one_batch() -> None:
    # Batch 100: (b) at 10,000/s is 10 ms a step; (c) at 8,000/s 12.5 ms, at 9,000/s 11.1 ms.
    ms = bench.overhead_ms_per_step([8000.0, 9000.0, 10000.0], [10000.0] * 3, 100)
    assert ms == pytest.approx(1000 * 100 * (1 / 9000 - 1 / 10000), abs=1e-3)


def test_startup_is_recorded_by_the_runner(make_cfg) -> None:
    from cnnlab.cli.train import run

    results = run(make_cfg("++trainer.limit_train_batches=2"))  # test() re-attaches callbacks
    assert results["startup_s"] > 0


def test_later_jobs_of_a_sweep_count_their_start_up_from_the_job(make_cfg) -> None:
    """A sweep runs its jobs in one process: from the second job on, the process's age would
    count every earlier job as start-up."""
    from cnnlab.cli.train import run
    from cnnlab.training.timing import process_age

    cfg = make_cfg("++trainer.limit_train_batches=2", "test=false")
    run(cfg)
    later = run(cfg)
    assert 0 < later["startup_s"] < later["wall_s"] < process_age()


def test_startup_report_is_the_median_of_the_launches(monkeypatch, tmp_path: Path) -> None:
    launches = iter([5.1, 4.2, None, 4.6])
    monkeypatch.setattr(bench, "startup_seconds", lambda out: next(launches))
    report = bench.startup_report(tmp_path, repeats=4)
    assert report == {"startup_s": 4.6, "startup_all_runs": [5.1, 4.2, None, 4.6]}


def test_paired_ratio_is_the_median_of_per_repeat_ratios() -> None:
    assert bench.paired_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0


def test_loop_b_starts_from_the_runners_weights(make_cfg, monkeypatch) -> None:
    """(b) and (c) compute the same numbers, so the bench compares the framework, not work."""
    from cnnlab.cli.train import run
    from cnnlab.training import lit

    cfg = make_cfg("++trainer.limit_train_batches=1", "test=false")
    seen: dict[str, dict[str, torch.Tensor]] = {}
    original = lit.LitClassifier.on_train_start

    def remember(self: lit.LitClassifier) -> None:
        seen["runner"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        original(self)

    monkeypatch.setattr(lit.LitClassifier, "on_train_start", remember)
    run(cfg)
    torch.manual_seed(cfg.seed + 1)  # whatever the RNG held before
    mine = bench.runner_initial_model(cfg).state_dict()
    assert seen["runner"].keys() == mine.keys()
    assert all(torch.equal(seen["runner"][k], mine[k]) for k in mine)


def test_overhead_quartiles_need_two_repeats() -> None:
    assert bench.overhead_quartiles([90.0], [100.0]) is None
    assert bench.overhead_quartiles([100.0, 96.0, 92.0, 88.0], [100.0] * 4) == [1.0, 11.0]


def test_on_a_gpu_the_runner_and_loop_b_use_the_gpu_recipe() -> None:
    assert bench.trainer_overrides(torch.device("cpu")) == []
    assert bench.trainer_overrides(torch.device("cuda")) == ["trainer=gpu"]
    cfg = bench.compose("alexnet", None, 2, Path("unused"), ["trainer=gpu"])
    assert bench.uses_bf16(cfg) and cfg.trainer.benchmark is True
    assert not bench.uses_bf16(bench.compose("lenet", 8, 2, Path("unused"), []))


def test_every_case_is_its_course_recipe() -> None:
    """Model, image size, batch size and learning rate come from experiments/<case>.yaml (with
    LeNet's learning rate AlexNet diverges within a few steps)."""
    sizes = {}
    for name in bench.CASES:
        cfg = bench.compose(name, None, 2, Path("unused"), [])
        recipe = compose_config([f"experiment={name}"])
        assert cfg.model == recipe.model and cfg.optimizer == recipe.optimizer
        assert cfg.dataset.batch_size == recipe.dataset.batch_size
        assert (cfg.dataset.val_size, cfg.test, cfg.trainer.max_epochs) == (0, False, 1)
        sizes[name] = cfg.dataset.image_size
    assert sizes == {"lenet": 28, "alexnet": 224, "vgg11": 224, "resnet18": 96}
    assert bench.compose("alexnet", 8, 2, Path("unused"), []).dataset.batch_size == 8


def test_a_diverged_runner_is_an_error_not_a_rate(make_cfg) -> None:
    with pytest.raises(RuntimeError, match="diverged"):
        bench.runner(make_cfg("ablation=[relu]", "optimizer.lr=1e8", "test=false"))


def test_loop_b_runs_forward_and_loss_under_bf16_autocast_when_asked() -> None:
    seen: list[torch.dtype] = []
    model = torch.nn.Linear(4, 3)
    model.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))] * 2
    cpu = torch.device("cpu")
    assert bench._sgd_steps(model, optimizer, batches, cpu, steps=None, bf16=True) > 0
    assert bench._sgd_steps(model, optimizer, batches, cpu, steps=1) > 0
    assert seen == [torch.bfloat16, torch.bfloat16, torch.float32]
    assert model.weight.dtype == torch.float32  # weights stay float32, as in bf16-mixed


def test_reference_loop_runs_with_pytorchs_defaults(tmp_path: Path) -> None:
    """The runner may have switched cuDNN autotuning on in this process; the course's loop
    must not inherit it."""
    cfg = bench.compose("lenet", 16, 1, tmp_path / "run", [])
    tv_root = bench.torchvision_root()  # the copy the bench itself reads, made once
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        assert bench.reference_loop(cfg, tv_root, torch.device("cpu"), steps=1) > 0
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before


def test_warmup_rounds_run_every_loop_but_are_not_counted(monkeypatch, tmp_path: Path) -> None:
    calls = {"reference": 0, "cnnlab_data": 0, "runner": 0}

    def fake(name: str):
        def loop(*args: object) -> float:
            calls[name] += 1
            return 100.0 * calls[name]  # the warm-up round is the slowest, 100/s

        return loop

    monkeypatch.setattr(bench, "reference_loop", fake("reference"))
    monkeypatch.setattr(bench, "cnnlab_data_loop", fake("cnnlab_data"))
    monkeypatch.setattr(bench, "runner", fake("runner"))
    cpu = torch.device("cpu")
    case = bench.bench_case("lenet", 8, 1, 2, cpu, tmp_path, tmp_path, warmup=1)
    assert calls == {"reference": 3, "cnnlab_data": 3, "runner": 3}
    assert case["all_runs"]["runner"] == [200.0, 300.0] and case["warmup_repeats"] == 1
