"""cnnlab-report on run directories laid out as cnnlab-train lays them out. The end-to-end path
(a real sweep through `make`, then the report) is in test_experiments.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cnnlab.cli.report import (
    ReportError,
    build_report,
    find_runs,
    group_runs,
    main,
    parse_overrides,
)


def write_run(job_dir: Path, overrides: list[str], **results: Any) -> Path:
    """A results.json with the keys cnnlab-train writes (history as per-epoch lists)."""
    job_dir.mkdir(parents=True)
    status = results.pop("status", "ok")
    record: dict[str, Any] = {"status": status, "overrides": overrides}
    if status != "failed":
        val = results.pop("val_curve", [0.5, 0.6])
        record.update(
            test_acc=results.pop("test_acc", val[-1]),
            val_acc=max(val),
            train_loss=1.0 / len(val),
            epochs_completed=len(val),
            params=61706,
            train_images_per_s=1000.0,
            wall_s=12.5,
            device="test CPU (2 cores)",
            history={"val/acc": val, "train/loss": [1.0 / (i + 1) for i in range(len(val))]},
            config={"seed": 0, "dataset": {"train_subset": None}, "trainer": {"max_epochs": 2}},
        )
    record.update(results)
    (job_dir / "results.json").write_text(json.dumps(record))
    return job_dir


def sweep_dir(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of the main table (the first markdown table of report.md), header excluded."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = lines[0]
    rows = []
    for line in lines[1:]:
        if line.count("|") != header.count("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_parse_overrides_strips_prefixes() -> None:
    assert parse_overrides(["model.pool=max", "++quick=true", "+x=[1,2]", "~y"]) == {
        "model.pool": "max",
        "quick": "true",
        "x": "[1,2]",
        "y": "",
    }


def test_rows_are_labelled_by_differing_overrides_and_sorted_by_test_acc(tmp_path: Path) -> None:
    root = sweep_dir(tmp_path)
    common = ["experiment=lenet_pool", "trainer.max_epochs=2"]
    write_run(root / "0", ["model.pool=avg", *common], val_curve=[0.60, 0.70], test_acc=0.69)
    write_run(root / "1", ["model.pool=max", *common], val_curve=[0.70, 0.80], test_acc=0.79)
    report = build_report(root)

    rows = table_rows(report.markdown)
    assert [row[0] for row in rows] == ["model.pool=max", "model.pool=avg"]
    assert rows[0][1:4] == ["ok", "0.7900", "0.8000"]
    assert "`experiment=lenet_pool trainer.max_epochs=2`" in report.markdown
    assert (root / "report.md").read_text() == report.markdown
    assert report.curves_path == root / "curves.png"
    assert (root / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert "make tensorboard DIR=" in report.markdown


def test_failed_and_diverged_runs_are_listed_with_their_status(tmp_path: Path) -> None:
    root = sweep_dir(tmp_path)
    write_run(root / "0", ["optimizer.lr=0.1"], val_curve=[0.5, 0.7])
    write_run(
        root / "1",
        ["optimizer.lr=-1"],
        status="failed",
        error="ConfigError: optimizer.lr must be a positive number, got -1",
    )
    write_run(root / "2", ["optimizer.lr=50"], status="diverged", val_curve=[0.1], diverged_epoch=0)
    (root / "3").mkdir()  # a job that died before it wrote results.json
    report = build_report(root)

    rows = {row[0]: row for row in table_rows(report.markdown)}
    assert rows["optimizer.lr=0.1"][1] == "ok"
    assert rows["optimizer.lr=-1"][1] == "failed"
    assert rows["optimizer.lr=-1"][2] == "–"  # no test accuracy, no made-up number
    assert rows["optimizer.lr=50"][1] == "diverged (epoch 0)"
    assert table_rows(report.markdown)[0][0] == "optimizer.lr=0.1"  # finished runs first
    unfinished = report.markdown.split("## Runs that did not finish normally")[1]
    assert "optimizer.lr must be a positive number" in unfinished
    assert "`3` (run) missing" in unfinished
    assert "- Runs: 4 (1 diverged, 1 failed, 1 missing, 1 ok)" in report.markdown


def test_runs_that_differ_only_in_seed_share_a_row(tmp_path: Path) -> None:
    root = sweep_dir(tmp_path)
    for job, (seed, pool, acc) in enumerate(
        [(0, "avg", 0.70), (1, "avg", 0.74), (2, "avg", 0.72), (0, "max", 0.80), (1, "max", 0.82)]
    ):
        write_run(root / str(job), [f"model.pool={pool}", f"seed={seed}"], test_acc=acc)
    groups = group_runs(find_runs(root))
    assert [(g.label, len(g.runs)) for g in groups] == [
        ("model.pool=max", 2),
        ("model.pool=avg", 3),
    ]

    rows = table_rows(build_report(root).markdown)
    assert rows[0][2] == "0.8100 ± 0.0141"  # mean ± sample std of 0.80, 0.82
    assert rows[1][2] == "0.7200 ± 0.0200"
    assert [row[-1] for row in rows] == ["2", "3"]  # the seeds column


def test_quick_runs_say_so_with_their_subset(tmp_path: Path) -> None:
    root = sweep_dir(tmp_path)
    config = {
        "quick": True,
        "dataset": {"train_subset": 10000, "val_size": 2000, "test_subset": 2000, "image_size": 28},
        "trainer": {"max_epochs": 2},
    }
    write_run(root / "0", ["model.pool=avg", "++quick=true"], config=config)
    markdown = build_report(root).markdown
    assert "**Quick run**" in markdown
    assert "10,000 training images (validation 2,000 held out of them, test 2,000)" in markdown
    assert "2 epochs, 28 px" in markdown


def test_gradient_norms_get_a_table_per_layer(tmp_path: Path) -> None:
    root = sweep_dir(tmp_path)
    for job, (act, first) in enumerate([("sigmoid", 1e-4), ("relu", 0.05)]):
        norms = {"mean_per_layer": {"features.0": first, "classifier.4": 0.3}}
        write_run(root / str(job), [f"model.activation={act}"], grad_norms=norms)
    markdown = build_report(root).markdown
    section = markdown.split("## Gradient norm per layer")[1]
    assert (
        "| layer (input to output) | model.activation=sigmoid | model.activation=relu |" in section
    )
    assert "| features.0 | 0.0001 | 0.05 |" in section
    assert "| classifier.4 | 0.3 | 0.3 |" in section


def test_cli_prints_the_table_and_where_files_are(tmp_path: Path, capsys) -> None:
    root = sweep_dir(tmp_path)
    write_run(root / "0", ["model.pool=avg"])
    assert main([str(root)]) == 0
    out = capsys.readouterr().out
    assert "| experiment" not in out and "| run | status | test acc" in out
    assert f"report:      {root / 'report.md'}" in out
    assert f"TensorBoard: make tensorboard DIR={root}" in out


def test_cli_explains_an_empty_directory(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path)]) == 1
    assert "no results.json below" in capsys.readouterr().err
    with pytest.raises(ReportError, match="no such directory"):
        find_runs(tmp_path / "nope")


def test_long_floats_are_shortened_but_never_merged(tmp_path: Path) -> None:
    root = sweep_dir(tmp_path)
    write_run(root / "0", ["optimizer.lr=0.06260326907499733"], test_acc=0.8)
    write_run(root / "1", ["optimizer.lr=0.06260326907499734"], test_acc=0.7)
    rows = table_rows(build_report(root).markdown)
    assert [row[0] for row in rows] == ["optimizer.lr=0.0626", "optimizer.lr=0.0626"]
    assert "seeds" not in build_report(root).markdown
