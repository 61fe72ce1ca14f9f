"""cnnlab-report on run directories laid out as cnnlab-train lays them out. The end-to-end path
(a real sweep through `make`, then the report) is in test_experiments.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cnnlab.cli.report import main
from cnnlab.runs.report import (
    ReportError,
    build_report,
    curve_styles,
    curves_figure,
    find_runs,
    findings,
    group_runs,
    parse_overrides,
    run_setting,
    run_settings,
    short_keys,
    sort_groups,
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
    assert [row[0] for row in rows] == ["pool=max", "pool=avg"]
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
    assert rows["lr=0.1"][1] == "ok"
    assert rows["lr=-1"][1] == "failed"
    assert rows["lr=-1"][2] == "–"  # no test accuracy, no made-up number
    assert rows["lr=50"][1] == "diverged (epoch 1)"
    assert table_rows(report.markdown)[0][0] == "lr=0.1"  # finished runs first
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
        ("pool=max", 2),
        ("pool=avg", 3),
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
    assert "8,000 training images (2,000 held out for validation), 2,000 test images" in markdown
    assert "2 epochs, 28 px" in markdown


def _config(name: str, batch: int, epochs: int) -> dict[str, Any]:
    return {
        "dataset": {"name": name, "val_size": 5000, "batch_size": batch, "image_size": 96},
        "trainer": {"max_epochs": epochs},
    }


def _settings(root: Path, runs: list[tuple[str, int, int]]) -> list[str]:
    for job, (name, batch, epochs) in enumerate(runs):
        overrides = [f"dataset={name}", f"dataset.batch_size={batch}", f"+e={epochs}"]
        write_run(root / str(job), overrides, config=_config(name, batch, epochs))
    return run_settings(find_runs(root))


def test_settings_that_differ_in_one_value_share_one_text(tmp_path: Path) -> None:
    fmnist = "fashion_mnist"
    settings = _settings(tmp_path / "a", [(fmnist, 32, 5), (fmnist, 64, 5), (fmnist, 128, 5)])
    head = "Fashion-MNIST: 55,000 training images (5,000 held out for validation), 10,000 test "
    assert settings == [head + "images, 5 epochs, batch 32/64/128, 96 px"]
    assert _settings(tmp_path / "b", [(fmnist, 32, 1), (fmnist, 32, 10)]) == [
        head + "images, 1/10 epochs, batch 32, 96 px"
    ]
    # Two values differ: merged, the text would not say which goes with which.
    assert _settings(tmp_path / "c", [(fmnist, 32, 1), (fmnist, 64, 5)]) == [
        head + "images, 1 epoch, batch 32, 96 px",
        head + "images, 5 epochs, batch 64, 96 px",
    ]
    # Another dataset is not a value of the same setting either.
    settings = _settings(tmp_path / "d", [(fmnist, 32, 5), ("mnist", 32, 5)])
    assert [s.split(":")[0] for s in settings] == ["Fashion-MNIST", "MNIST"]
    runs = find_runs(tmp_path / "d")
    assert run_settings(runs[:1]) == [run_setting(runs[0])]


def test_rows_of_different_nets_are_named_by_the_experiment_and_model(tmp_path: Path) -> None:
    # An item comparing two nets: the laptop protocol adds overrides to one sweep only.
    root = sweep_dir(tmp_path)
    laptop = ["laptop=true", "dataset.image_size=96", "model.fc_width=1024"]
    write_run(root / "0", ["experiment=alexnet", *laptop, "seed=0"])
    write_run(root / "1", ["experiment=alexnet", *laptop, "seed=1"])
    write_run(root / "2", ["experiment=lenet", "seed=0"])
    labels = [g.label for g in group_runs(find_runs(root))]
    assert labels == ["experiment=alexnet", "experiment=lenet"]
    # A key that varies within an experiment still labels the rows.
    write_run(root / "3", ["experiment=alexnet", *laptop[:2], "model.fc_width=512", "seed=0"])
    labels = [g.label for g in group_runs(find_runs(root))]
    assert "experiment=alexnet fc_width=512" in labels, labels
    # So does the model: one experiment comparing two models, narrowed differently.
    (tmp_path / "models").mkdir()
    root = sweep_dir(tmp_path / "models")
    write_run(root / "0", ["model=alexnet", "experiment=small", "model.fc_width=1024"])
    write_run(root / "1", ["model=alexnet_small", "experiment=small"])
    write_run(root / "2", ["experiment=alexnet28", "trainer.max_epochs=5"])
    labels = [g.label for g in group_runs(find_runs(root))]
    assert sorted(labels) == [
        "experiment=alexnet28",
        "model=alexnet experiment=small",
        "model=alexnet_small experiment=small",
    ]


def test_gradient_norms_get_a_table_per_layer(tmp_path: Path) -> None:
    root = sweep_dir(tmp_path)
    for job, (act, first) in enumerate([("sigmoid", 1e-4), ("relu", 0.05)]):
        norms = {"mean_per_layer": {"features.0": first, "classifier.4": 0.3}}
        write_run(root / str(job), [f"model.activation={act}"], grad_norms=norms)
    markdown = build_report(root).markdown
    section = markdown.split("## Gradient norm per layer")[1]
    assert "| layer (input to output) | activation=sigmoid | activation=relu |" in section
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


def test_findings_say_whether_the_seeds_resolve_a_difference(tmp_path: Path) -> None:
    root = sweep_dir(tmp_path)
    accs = {"max": [0.85, 0.86, 0.87], "avg": [0.84, 0.86, 0.88], "none": [0.1, 0.1, 0.1]}
    job = 0
    for pool, values in accs.items():
        for seed, acc in enumerate(values):
            write_run(root / str(job), [f"model.pool={pool}", f"seed={seed}"], test_acc=acc)
            job += 1
    findings = build_report(root).markdown.split("## Findings", 1)[1]
    assert "`pool=avg`: 0.8600 ± 0.0200, +0.0000 (within the seeds' spread: not resolved)" in (
        findings
    )
    assert "`pool=none` did not learn: test accuracy 0.1000" in findings


def test_long_floats_are_shortened_but_never_merged(tmp_path: Path) -> None:
    root = sweep_dir(tmp_path)
    write_run(root / "0", ["optimizer.lr=0.06260326907499733"], test_acc=0.8)
    write_run(root / "1", ["optimizer.lr=0.06260326907499734"], test_acc=0.7)
    rows = table_rows(build_report(root).markdown)
    assert [row[0] for row in rows] == ["lr=0.0626", "lr=0.0626"]
    assert "| seeds |" not in build_report(root).markdown  # two rows, not one of two seeds


# --- reads at a glance (issue 20): short labels, no "± 0", one colour per row, whole legend ---
def seeded_sweep(root: Path, variants: list[list[str]], seeds: int = 3) -> None:
    """``seeds`` runs of each variant, with slightly different curves."""
    job = 0
    for v, overrides in enumerate(variants):
        for seed in range(seeds):
            val = [0.5 + 0.02 * v + 0.01 * seed, 0.6 + 0.02 * v + 0.01 * seed]
            write_run(root / str(job), [*overrides, f"seed={seed}"], val_curve=val)
            job += 1


def test_labels_are_the_short_differing_overrides(tmp_path: Path) -> None:
    root = sweep_dir(tmp_path)
    common = ["experiment=vgg11", "trainer.max_epochs=2"]
    write_run(root / "0", ["model=vgg11", "optimizer.lr=0.1", "ablation=[relu,max_pool]", *common])
    write_run(root / "1", ["model=vgg16", "optimizer.lr=0.01", "ablation=[]", *common])
    labels = {row[0] for row in table_rows(build_report(root).markdown)}
    assert labels == {
        "model=vgg11 lr=0.1 ablation=[relu,max_pool]",
        "model=vgg16 lr=0.01 ablation=[]",
    }


def test_a_key_ending_that_two_differing_keys_share_stays_long() -> None:
    keys = [
        "model",
        "model.dropout",
        "dataset.dropout",
        "optimizer.lr",
        "a.b.lr",
        "c.b.lr",
        "ablation",
    ]
    assert short_keys(keys) == {
        "model": "model",
        "model.dropout": "model.dropout",
        "dataset.dropout": "dataset.dropout",
        "optimizer.lr": "optimizer.lr",
        "a.b.lr": "a.b.lr",
        "c.b.lr": "c.b.lr",
        "ablation": "ablation",
    }
    assert short_keys(["model.pool", "pool"]) == {"model.pool": "model.pool", "pool": "pool"}
    assert short_keys(["trainer.max_epochs", "model.pool"]) == {
        "trainer.max_epochs": "max_epochs",
        "model.pool": "pool",
    }
    # A list element keeps its list's name: Optuna's conv widths are not "0=16 1=64".
    assert short_keys(["optimizer.lr", "model.conv_channels.0", "model.conv_channels.1"]) == {
        "optimizer.lr": "lr",
        "model.conv_channels.0": "conv_channels.0",
        "model.conv_channels.1": "conv_channels.1",
    }


def test_a_search_without_a_recipe_row_is_summed_up(tmp_path: Path) -> None:
    root = sweep_dir(tmp_path)
    for job in range(9):
        write_run(root / str(job), [f"optimizer.lr={job + 1}"], test_acc=0.80 + job / 100)
    lines = findings(sort_groups(group_runs(find_runs(root))))
    assert lines == [
        "Best test accuracy: `lr=9`, 0.8800.",
        "The other 8 runs reached 0.8000 to 0.8700 (one seed each: the seeds' spread is unknown).",
    ]
    # With a recipe row, each variant is still compared with it.
    assert len(findings(sort_groups(group_runs(find_runs(root))), "lr=1")) == 9


def test_values_the_seeds_share_are_shown_once(tmp_path: Path) -> None:
    root = sweep_dir(tmp_path)
    seeded_sweep(root, [["model.pool=avg"], ["model.pool=max"]])
    # wall times that differ by less than the shown precision: 12.5 s, 12.6 s, 12.4 s
    for job, wall in enumerate([12.5, 12.6, 12.4]):
        path = root / str(job) / "results.json"
        path.write_text(path.read_text().replace('"wall_s": 12.5', f'"wall_s": {wall}'))
    report = build_report(root)
    header = [c.strip() for c in report.table.splitlines()[0].strip("|").split(" | ")]
    for row in table_rows(report.markdown):
        cells = dict(zip(header, row, strict=True))
        assert cells["epochs"] == "2"
        assert cells["params"] == "61.7k"
        assert cells["wall s"] in ("12", "13")  # "12 ± 0" is no information
        assert " ± " in cells["test acc"]  # a spread that shows stays
    assert "± 0 " not in report.markdown and not any(
        cell.endswith("± 0") for row in table_rows(report.markdown) for cell in row
    )
    assert "± 0.0000" not in report.markdown and "± 0k" not in report.markdown


def test_curves_have_one_colour_and_one_legend_entry_per_row(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib import colors

    root = sweep_dir(tmp_path)
    seeded_sweep(root, [[f"model.pool={p}"] for p in ("avg", "max", "lp")], seeds=3)
    write_run(root / "9", ["model.pool=none"])  # one run: a line without a band
    groups = group_runs(find_runs(root))
    fig = curves_figure(groups)
    try:
        (legend,) = fig.legends
        texts = [t.get_text() for t in legend.get_texts()]
        assert texts == [
            f"{g.label} (3\N{NO-BREAK SPACE}seeds)" if len(g.runs) > 1 else g.label for g in groups
        ]
        legend_colours = [colors.to_hex(h.get_color()) for h in legend.legend_handles]
        assert len(set(legend_colours)) == len(groups)
        for ax in fig.axes:
            # one line per row (the mean of its seeds), in the legend's colour
            assert [line.get_label() for line in ax.get_lines()] == [g.label for g in groups]
            assert [colors.to_hex(line.get_color()) for line in ax.get_lines()] == legend_colours
            # the seeds' min-max band, in the same colour, for each row with seeds
            bands = [colors.to_hex(c.get_facecolor()[0], keep_alpha=False) for c in ax.collections]
            seeded = [len(g.runs) > 1 for g in groups]
            assert bands == [c for c, s in zip(legend_colours, seeded, strict=True) if s]
            line = ax.get_lines()[groups.index(next(g for g in groups if len(g.runs) == 3))]
            assert len(line.get_ydata()) == 2  # the mean per epoch, not one line per seed
    finally:
        plt.close(fig)


def test_curve_styles_stay_distinct_beyond_ten_variants() -> None:
    styles = curve_styles(40)
    assert len(set(styles)) == 40
    assert len({colour for colour, _ in styles[:10]}) == 10  # a qualitative map: tab10
    assert len({colour for colour, _ in styles[:20]}) == 20
    assert {style for _, style in styles[:10]} == {"-"}


def test_the_legend_is_below_the_plots_and_whole(tmp_path: Path) -> None:
    import matplotlib.image
    import matplotlib.pyplot as plt

    root = sweep_dir(tmp_path)
    long = "ablation=[tanh,avg_pool,batch_norm,dropout,kaiming_init,label_smoothing]"
    variants = [
        [f"optimizer.lr=0.{v + 1}", long if v % 2 else "ablation=[]", f"model.dropout=0.{v}"]
        for v in range(8)
    ]
    seeded_sweep(root, variants, seeds=2)
    groups = group_runs(find_runs(root))
    fig = curves_figure(groups)
    try:
        renderer = fig.canvas.get_renderer()
        fig.draw(renderer)
        (legend,) = fig.legends
        box = legend.get_window_extent(renderer)
        page = fig.bbox
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 <= box.y1 <= page.y1
        for ax in fig.axes:  # below the plots (and their axis labels), not over a curve
            assert box.y1 <= ax.get_tightbbox(renderer).y0
        assert len(legend.get_texts()) == 8
    finally:
        plt.close(fig)
    report = build_report(root)
    image = matplotlib.image.imread(report.curves_path)
    assert image.shape[0] > image.shape[1] / 3  # room for the plots and the legend below


def test_training_loss_is_drawn_per_step_where_every_run_has_steps(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    root = sweep_dir(tmp_path)
    for job, pool in enumerate(("avg", "max")):
        path = write_run(root / str(job), [f"model.pool={pool}"])
        results = json.loads((path / "results.json").read_text())
        results["history"]["train/loss_step"] = [2.3, 2.0, 1.5, 1.2, 1.0]
        (path / "results.json").write_text(json.dumps(results))
    fig = curves_figure(group_runs(find_runs(root)))
    try:
        accuracy, loss = fig.axes
        assert accuracy.get_xlabel() == "epoch" and loss.get_xlabel() == "step"
        assert [len(line.get_ydata()) for line in loss.get_lines()] == [5, 5]
    finally:
        plt.close(fig)
    write_run(root / "2", ["model.pool=lp"])  # no steps recorded: all per epoch
    fig = curves_figure(group_runs(find_runs(root)))
    try:
        assert fig.axes[1].get_xlabel() == "epoch"
    finally:
        plt.close(fig)


def test_a_results_json_with_values_of_the_wrong_type_is_reported_not_a_traceback(
    tmp_path: Path,
) -> None:
    from cnnlab.runs.sweep import summarise

    root = sweep_dir(tmp_path)
    write_run(root / "0", ["model.pool=avg"])
    job = write_run(root / "1", ["model.pool=max"], test_acc="abc", params=[1])
    results = json.loads((job / "results.json").read_text())
    (job / "results.json").write_text(json.dumps(results | {"overrides": 7}))
    report = build_report(root, tmp_path / "report")
    assert "Runs: 2" in report.markdown
    _, text = summarise(root)
    assert "2 jobs, 2 ok" in text
