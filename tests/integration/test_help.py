"""``cnnlab-train --help`` and ``cnnlab-analyze --help`` print cnnlab's pages (conf/hydra/help/),
not Hydra's generic one: the commands, the config groups with their options, the main knobs and
examples."""

from __future__ import annotations

import pytest

from cli_runner import call_entry_point, run_cli
from cnnlab.cli import analyze

COMMANDS = ("cnnlab-train", "cnnlab-eval", "cnnlab-analyze", "cnnlab-visualize", "cnnlab-report")


def analyze_help(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit status, output) of ``cnnlab-analyze *args`` in this process."""
    code = call_entry_point(analyze.main, ["cnnlab-analyze", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def lines_starting(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_train_help_is_cnnlabs_page(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(["--help"], capsys)
    assert code == 0
    assert "Powered by Hydra" not in out and "powered by Hydra" not in out
    assert out.startswith("cnnlab-train:")
    commands = out.split("== Commands ==")[1].split("==")[0]
    for command in COMMANDS:
        assert any(line.startswith(command) for line in commands.splitlines()), command
    assert "cnnlab-eval run_dir=<run dir>" in out
    assert "cnnlab-visualize run_dir=<run dir>" in out
    assert "cnnlab-report <run or sweep dir>" in out

    # The groups and their options come from conf/ itself (Hydra's $APP_CONFIG_GROUPS).
    (model,) = lines_starting(out, "model: ")
    assert {"lenet", "vgg11", "resnet18", "googlenet"} <= set(model[len("model: ") :].split(", "))
    for group in ("dataset:", "optimizer:", "scheduler:", "ablation:", "trainer:", "experiment:"):
        assert lines_starting(out, group), group
    assert not lines_starting(out, "hydra/"), "Hydra's own groups belong to --hydra-help"

    knobs = out.split("== Main knobs ==")[1].split("==")[0]
    for knob in (
        "experiment=",
        "model=",
        "dataset=",
        "optimizer=",
        "optimizer.lr=",
        "ablation=[",
        "trainer.max_epochs=",
        "seed=",
        "-m ",
        "resume=<run dir>",
    ):
        assert knob in knobs, knob
    examples = out.split("== Examples ==")[1].split("\n\n")[0].strip().splitlines()
    assert len(examples) == 5
    assert all(line.startswith("cnnlab-train") for line in examples)
    assert any(" -m " in line for line in examples)


def test_train_help_follows_the_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    """--help after overrides still composes (and still prints cnnlab's page)."""
    code, out = run_cli(["experiment=vgg11", "model=vgg16", "--help"], capsys)
    assert code == 0
    assert out.startswith("cnnlab-train:") and "Powered by Hydra" not in out


def test_analyze_help_names_compare_and_min_size(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = analyze_help(["--help"], capsys)
    assert code == 0
    assert out.startswith("cnnlab-analyze:")
    assert "Powered by Hydra" not in out and "powered by Hydra" not in out
    options = out.split("== Options ==")[1].split("==")[0]
    assert lines_starting(options, "--compare")
    assert lines_starting(options, "min_size=true")
    assert lines_starting(options, "models=[")
    assert lines_starting(out, "model: ") and "lenet" in lines_starting(out, "model: ")[0]
    examples = out.split("== Examples ==")[1].split("\n\n")[0].strip().splitlines()
    assert len(examples) == 5
    assert "cnnlab-analyze --compare dataset.image_size=224" in examples
    assert any("min_size=true" in line for line in examples)


def test_analyze_help_with_compare_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """--compare is turned into compare=true before Hydra sees it; --help still works."""
    code, out = analyze_help(["--compare", "--help"], capsys)
    assert code == 0 and out.startswith("cnnlab-analyze:")
