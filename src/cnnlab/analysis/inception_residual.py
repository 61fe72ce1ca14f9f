"""ResNet exercise I in numbers: the Inception block, paths removed one by one until one is left,
then an identity path beside it, which makes it the residual block (``MultiPath`` in
cnnlab.models.resnet). One row per step with what the block computes, its paths' widths, its
parameters and FLOPs; a second table has the nets of ``experiments/resnet_inception.yaml``.

    python -m cnnlab.analysis.inception_residual outputs/exercises/resnet-inception/<dir>

writes ``inception_residual.md`` and ``inception_residual.json`` there (``make
resnet-inception`` does, beside the training sweep's report.md). The width and image size are
the sweep's own (read from its runs' results.json, so a ``SCALE=laptop`` sweep at width 16 gets
a width-16 table), else 64 channels at 28 px, unless ``--width``/``--image-size`` say otherwise.
Shapes only: every block is built and run on the ``meta`` device, so nothing is initialised or
trained.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.analysis.layers import profile_model
from cnnlab.analysis.tables import Table, count, si
from cnnlab.models.resnet import INCEPTION_PATHS, MultiPath, MultiPathNet, Residual, path_widths
from cnnlab.runs.report import ReportError, find_runs

DEFAULT_WIDTH, DEFAULT_IMAGE_SIZE = 64, 28  # conf/model/multipath.yaml, the experiment's size
MARKDOWN_FILE = "inception_residual.md"
JSON_FILE = "inception_residual.json"

# (step, paths kept, identity path): the exercise's sequence, Inception block first. The 3x3 path
# is the one left, the path ResNet's blocks also centre on a 3x3 conv.
STEPS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("Inception block (GoogLeNet)", INCEPTION_PATHS, False),
    ("remove the pool path", ("1x1", "3x3", "5x5"), False),
    ("remove the 5x5 path", ("1x1", "3x3"), False),
    ("remove the 1x1 path: one path left", ("3x3",), False),
    ("add an identity path: the residual block", ("3x3",), True),
)
# The experiment's variants: experiments/resnet_inception.yaml sweeps these.
NET_VARIANTS: tuple[tuple[tuple[str, ...], bool], ...] = (
    (INCEPTION_PATHS, False),
    (INCEPTION_PATHS, True),
    (("3x3",), False),
    (("3x3",), True),
)


@dataclass
class Row:
    step: str
    formula: str
    widths: str
    params: int
    flops_per_image: int


def formula(paths: Sequence[str], identity: bool) -> str:
    """What the block computes: ``Y = ReLU(concat(f_1x1(X), f_3x3(X)) + X)``."""
    terms = [f"f_{p}(X)" for p in paths]
    merged = terms[0] if len(terms) == 1 else f"concat({', '.join(terms)})"
    return f"Y = ReLU({merged}{' + X' if identity else ''})"


def describe_widths(channels: int, paths: Sequence[str]) -> str:
    """``1x1: 16, 3x3: 24->32, ...``: a path's reduce width, if it has one, then its output."""
    widths = path_widths(channels, paths)
    return ", ".join(f"{p}: {f'{r}->' if r else ''}{o}" for p, (r, o) in widths.items())


def _measure(
    build: Callable[[], nn.Module], input_shape: tuple[int, int, int, int]
) -> tuple[int, int]:
    """(parameters, FLOPs per image) of the module ``build`` makes, on the meta device."""
    with torch.device("meta"):
        module = build()
    profile = profile_model(module, input_shape)
    return profile.total_params, profile.total_flops_per_image


def block_rows(channels: int = 64, image_size: int = 14) -> list[Row]:
    """The steps from the Inception block to the residual block, one ``channels``-wide block each
    at ``image_size`` px, and ResNet's own basic block at the same width for comparison."""
    shape = (1, channels, image_size, image_size)
    rows = []
    for step, paths, identity in STEPS:
        params, flops = _measure(lambda p=paths, i=identity: MultiPath(channels, p, i), shape)
        rows.append(
            Row(step, formula(paths, identity), describe_widths(channels, paths), params, flops)
        )
    params, flops = _measure(lambda: Residual(channels, channels), shape)
    rows.append(
        Row(
            "for comparison: ResNet's basic block (resnet.Residual)",
            "Y = ReLU(f(X) + X), f = 3x3 -> 3x3",
            f"3x3: {channels}->{channels}",
            params,
            flops,
        )
    )
    return rows


def net_rows(width: int = 64, image_size: int = 28, in_channels: int = 1) -> list[Row]:
    """The nets the experiment trains (conf/model/multipath.yaml's defaults otherwise)."""
    shape = (1, in_channels, image_size, image_size)
    rows = []
    for paths, identity in NET_VARIANTS:
        label = f"paths=[{','.join(paths)}] identity={str(identity).lower()}"
        params, flops = _measure(
            lambda p=paths, i=identity: MultiPathNet(in_channels, paths=p, identity=i, width=width),
            shape,
        )
        rows.append(
            Row(label, formula(paths, identity), describe_widths(width, paths), params, flops)
        )
    return rows


def _table(title: str, first: str, rows: list[Row]) -> Table:
    table = Table(
        title=title,
        columns=[first, "block computes", "path widths (reduce->out)", "params", "FLOPs/img"],
        text_columns=(0, 1, 2),
    )
    for r in rows:
        table.add(r.step, r.formula, r.widths, count(r.params), si(r.flops_per_image))
    return table


def first_stage_size(image_size: int) -> int:
    """The side of the first stage's maps: MultiPathNet's stem pools 3x3/2 (28 -> 14)."""
    return (image_size + 1) // 2


def tables(blocks: list[Row], nets: list[Row], channels: int, image_size: int) -> list[Table]:
    """The block table (at the first stage's size) and the net table."""
    size = first_stage_size(image_size)
    return [
        _table(
            f"From the Inception block to the residual block: one block, {channels} channels in "
            f"and out, {size}x{size} px",
            "step",
            blocks,
        ),
        _table(
            f"The nets of experiments/resnet_inception.yaml (MultiPathNet, 9 blocks, width "
            f"{channels}) at {image_size}x{image_size} px",
            "variant",
            nets,
        ),
    ]


NOTES = (
    "The identity path is X itself: no parameters and no FLOPs (one addition per value, which "
    "FLOP counters leave out). One path + X has exactly the parameters of the one path alone.",
    "Removing paths changes what a block can compute (one kernel size instead of four side by "
    "side); adding X changes what it has to learn: f only has to fit Y - X, and f = 0 makes the "
    "block an identity (its input is a ReLU's output), so an added block can always leave the "
    "net as it was.",
    "The kept paths share the block's width in the proportions of Inception 3a (64 : 128 : 32 : "
    "32), so the output stays as wide as X and the sum is defined: the 3x3 path alone gets all "
    "channels, which is why it has more parameters than the four-path block.",
)


def write_report(out_dir: Path, channels: int = 64, image_size: int = 28) -> Path:
    """Print the tables and write them to ``out_dir``; returns the markdown file."""
    from rich.console import Console

    out_dir.mkdir(parents=True, exist_ok=True)
    console = Console(width=max(160, Console().width))
    blocks = block_rows(channels, first_stage_size(image_size))
    nets = net_rows(channels, image_size)
    parts = tables(blocks, nets, channels, image_size)
    markdown = ["# ResNet I: from the Inception block to the residual block\n"]
    for table in parts:
        console.print(table.to_rich())
        markdown.append(table.to_markdown())
    for note in NOTES:
        console.print(f"- {note}", highlight=False, markup=False)
        markdown.append(f"- {note}")
    path = out_dir / MARKDOWN_FILE
    path.write_text("\n".join(markdown) + "\n")
    data = {
        "channels": channels,
        "image_size": image_size,
        "blocks": [asdict(r) for r in blocks],
        "nets": [asdict(r) for r in nets],
    }
    (out_dir / JSON_FILE).write_text(json.dumps(data, indent=2) + "\n")
    console.print(f"analysis:    {path}", highlight=False)
    return path


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def sweep_size(sweep_dir: Path) -> tuple[int | None, int | None]:
    """(width, image size) the MultiPathNet runs below ``sweep_dir`` trained at, read from their
    results.json (data only: anything that is not a positive int counts as absent); (None, None)
    where there are no such runs. Runs that disagree give None for that value."""
    try:
        runs = find_runs(sweep_dir)
    except ReportError:
        return None, None
    configs = [run.config for run in runs if isinstance(run.config.get("model"), dict)]
    configs = [c for c in configs if str(c["model"].get("_target_", "")).endswith("MultiPathNet")]
    widths = {_positive_int(c["model"].get("width")) for c in configs}
    sizes = {
        _positive_int(c["dataset"].get("image_size"))
        for c in configs
        if isinstance(c.get("dataset"), dict)
    }
    width = widths.pop() if len(widths) == 1 else None
    size = sizes.pop() if len(sizes) == 1 else None
    return width, size


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="where inception_residual.md/.json go")
    parser.add_argument(
        "--width", type=int, help=f"channels of every block (the runs', else {DEFAULT_WIDTH})"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help=f"input image size (the runs', else {DEFAULT_IMAGE_SIZE})",
    )
    args = parser.parse_args(argv)
    run_width, run_size = sweep_size(args.out_dir)
    width = args.width or run_width or DEFAULT_WIDTH
    image_size = args.image_size or run_size or DEFAULT_IMAGE_SIZE
    write_report(args.out_dir, width, image_size)


if __name__ == "__main__":
    main()
