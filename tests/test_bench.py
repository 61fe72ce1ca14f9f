"""The benchmark script runs end to end on a tiny setting and reports every figure."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cnnlab import bench


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


def test_startup_is_recorded_by_the_runner(make_cfg) -> None:
    from cnnlab.train import run

    results = run(make_cfg("++trainer.limit_train_batches=2"))  # test() re-attaches callbacks
    assert results["startup_s"] > 0


def test_startup_report_is_the_median_of_the_launches(monkeypatch, tmp_path: Path) -> None:
    launches = iter([5.1, 4.2, None, 4.6])
    monkeypatch.setattr(bench, "startup_seconds", lambda out: next(launches))
    report = bench.startup_report(tmp_path, repeats=4)
    assert report == {"startup_s": 4.6, "startup_all_runs": [5.1, 4.2, None, 4.6]}


def test_paired_ratio_is_the_median_of_per_repeat_ratios() -> None:
    assert bench.paired_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0


def test_loop_b_starts_from_the_runners_weights(make_cfg, monkeypatch) -> None:
    """(b) and (c) compute the same numbers, so the bench compares the framework, not work."""
    from cnnlab import lit
    from cnnlab.train import run

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
