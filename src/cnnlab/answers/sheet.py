"""docs/ANSWERS.md: the answer to every exercise item, written from docs/results/ alone.

Nothing here trains or measures: every number in the sheet is read from the compact results the
items' runs left in ``docs/results/<item>/<scale>/`` (cnnlab.answers.run), every figure is drawn
from their histories into ``docs/answers/``, and the prose around the numbers is chosen by
comparing them (a difference is called resolved only when it is larger than the seeds' spread).
Writing it twice from the same results gives the same file, byte for byte; a test checks that
the committed sheet is what the committed results give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cnnlab.answers.items import ANALYZE, BIG, ITEMS, PROTOCOL_RECIPES, SECTIONS, Item
from cnnlab.answers.run import FULL, LAPTOP, RESULTS_DIR, read_item_file
from cnnlab.runs.files import atomic_write
from cnnlab.runs.report import (
    Group,
    ReportError,
    Run,
    curves_figure,
    find_runs,
    findings,
    grad_norm_findings,
    grad_norm_table,
    group_runs,
    machines,
    markdown_table,
    results_table,
    run_setting,
    run_settings,
)

SHEET = Path("docs") / "ANSWERS.md"
FIGURES_DIR = Path("docs") / "answers"
# The model knobs a laptop protocol narrows a net with (Makefile LAPTOP_*).
WIDTH_KEYS = ("width_multiplier", "fc_width", "width_ratio", "width")
SCALE_NAMES = {FULL: "course recipe (full scale)", LAPTOP: "laptop scale (a proxy)"}


@dataclass
class ItemResults:
    item: Item
    scale: str
    root: Path  # docs/results/<item>/<scale>
    runs: list[Run]
    groups: list[Group]
    complete: bool

    @property
    def seeds(self) -> int:
        return max((len(group.runs) for group in self.groups), default=0)


def load(results_root: Path, item: Item) -> list[ItemResults]:
    """The item's results at each scale it has any for (full first)."""
    loaded = []
    for scale in (FULL, LAPTOP):
        root = results_root / item.target / scale
        if not root.is_dir() or item.kind == ANALYZE:
            continue
        try:
            runs = find_runs(root)
        except ReportError:  # a directory without runs: "not measured"
            continue
        complete = bool(read_item_file(root).get("complete"))
        loaded.append(ItemResults(item, scale, root, runs, group_runs(runs), complete))
    return loaded


# --- the answer ------------------------------------------------------------------------------
def answer(results: ItemResults) -> list[str]:
    """Sentences that state the measured outcome, citing the table (cnnlab.runs.report)."""
    lines = findings(results.groups, results.item.baseline) + grad_norm_findings(results.groups)
    if results.item.speed:
        lines += speed_findings(results.groups, results.item.baseline)
    if results.item.loss:
        lines += loss_findings(results.groups)
    return lines


def loss_findings(groups: Sequence[Group]) -> list[str]:
    """The rows' final training loss, lowest first: how well each variant fit the data."""
    losses = [(g.mean("train_loss"), g.label) for g in groups]
    ranked = sorted((loss, label) for loss, label in losses if loss is not None)
    if len(ranked) < 2:
        return []
    ranked_text = ", ".join(f"`{label}` {loss:.4f}" for loss, label in ranked)
    return [f"Final training loss, lowest first: {ranked_text}."]


def speed_findings(groups: Sequence[Group], baseline: str | None) -> list[str]:
    """Training speed of each row against the baseline's (else the fastest row's)."""
    rates = {g.label: g.mean("train_images_per_s") for g in groups}
    rates = {label: rate for label, rate in rates.items() if rate}
    if len(rates) < 2:
        return []
    reference = baseline if baseline in rates else max(rates, key=lambda label: rates[label])
    others = ", ".join(
        f"`{label}` {rate:,.0f} ({rate / rates[reference]:.2f}x)"
        for label, rate in sorted(rates.items(), key=lambda item: -item[1])
        if label != reference
    )
    return [f"Training images/s against `{reference}`'s {rates[reference]:,.0f}: {others}."]


def figure(results: ItemResults, docs: Path) -> str | None:
    """Draw the item's curves into docs/answers/; the path relative to the sheet, or None."""
    fig = curves_figure(results.groups)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    name = f"{results.item.target}-{results.scale}.png"
    path = docs / FIGURES_DIR.name / name
    path.parent.mkdir(parents=True, exist_ok=True)
    # No software version in the file: the figure changes only when the results do.
    fig.savefig(path, dpi=90, bbox_inches="tight", pad_inches=0.15, metadata={"Software": None})
    plt.close(fig)
    return f"{FIGURES_DIR.name}/{name}"


def item_section(item: Item, measured: list[ItemResults], docs: Path, results_root: Path) -> str:
    run = f"Run: `make {item.target}`"
    if item.family == BIG and item.trains:
        run += f" (course recipe, a GPU), `make {item.target} SCALE=laptop` (a CPU)"
    parts = [f"### {item.title}", "", f"> {item.question}", "", run]
    if item.kind == ANALYZE:
        return "\n".join(parts + [""] + analysis_section(item, results_root))
    if not measured:
        scale = "SCALE=laptop on a CPU, the course recipe on a GPU" if item.family == BIG else ""
        parts += ["", f"**Not measured yet** ({scale or 'the course recipe'}: "
                  f"`make answers ITEMS={item.target}`)."]  # fmt: skip
        return "\n".join(parts) + "\n"
    for results in measured:
        parts += ["", f"#### {SCALE_NAMES[results.scale]}", ""]
        seeds = results.seeds
        parts.append(
            f"- Ran: {'; '.join(run_settings(results.runs))}"
            + (f"; {seeds} seeds per variant" if seeds > 1 else "; one seed")
        )
        timed = item.speed or results.scale == LAPTOP
        if machine := machines(results.runs):
            minutes = training_minutes(results.runs)
            parts.append(
                f"- Machine: {machine}"
                + (f"; {minutes:.1f} min for the {len(results.runs)} runs" if timed else "")
            )
        if results.scale == LAPTOP:
            parts.append('- Laptop scale: a proxy for the course recipe (see "Laptop scale").')
        if not results.complete:
            parts.append("- **Incomplete**: not every job finished; `make answers` continues it.")
        if item.look_at:
            parts.append(f"- Look at: {item.look_at}.")
        parts += ["", results_table(results.groups, timings=timed), ""]
        if norms := grad_norm_table(results.groups):
            parts += ["Mean gradient norm per layer (input to output):", "", norms, ""]
        if (path := figure(results, docs)) is not None:
            parts += [f"![{item.target}: validation accuracy and training loss]({path})", ""]
        parts += extra_files(results, results_root)
        if any(run.quick for run in results.runs):
            parts += ["**Quick run** (`QUICK=1`): it answers nothing; run `make answers`."]
        else:
            parts += ["**Answer.** " + " ".join(answer(results))]
    return "\n".join(parts) + "\n"


def extra_files(results: ItemResults, results_root: Path) -> list[str]:
    """What an item's analysis tools wrote beside its runs: the Inception-to-residual table
    (resnet-inception), the activation figures (lenet-activations)."""
    lines = []
    table = results.root / "inception_residual.md"
    if table.is_file():
        lines += markdown_sections(table)
    for png in sorted(results.root.glob("visualize/*.png")):
        link = png.relative_to(results_root.parent).as_posix()
        lines += [f"![{png.stem}]({link})", ""]
    return lines


def markdown_sections(path: Path, skip_tables_under: str | None = None) -> list[str]:
    """A tool's markdown without its title, headings moved below the item's, and without the
    tables under headings that contain ``skip_tables_under``."""
    lines, skipping = [], False
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            continue  # the tool's title
        if line.startswith("#"):
            skipping = skip_tables_under is not None and skip_tables_under in line
            line = "####" + line.lstrip("#")
        elif skipping and line.startswith("|"):
            continue
        lines.append(line)
    return [*lines, ""]


def analysis_section(item: Item, results_root: Path) -> list[str]:
    """An analysis item's findings as its tool wrote them (analysis.md): its summaries and
    tables, without the per-layer tables (one row per leaf layer; the linked file has them),
    headings moved below the item's."""
    path = results_root / item.target / FULL / "analysis.md"
    if not path.is_file():
        return [f"**Not measured yet** (`make answers ITEMS={item.target}`).", ""]
    link = path.relative_to(results_root.parent).as_posix()
    lines = markdown_sections(path, skip_tables_under="every leaf layer")
    return [*lines, f"Every layer: [{link}]({link})", ""]


def training_minutes(runs: Sequence[Run]) -> float:
    """The runs' summed wall time (startup, training, validation, test), in minutes."""
    return sum(run.get("wall_s") or 0.0 for run in runs) / 60


def protocol_text(run: Run) -> str:
    """A laptop run's protocol from its config: image size, width knobs, data, epochs, batch."""
    model = run.config.get("model") or {}
    widths = [f"{key} {model[key]}" for key in WIDTH_KEYS if key in model]
    return run_setting(run) + (f"; {', '.join(widths)}" if widths else "")


def laptop_section(loaded: dict[str, list[ItemResults]]) -> list[str]:
    """The laptop protocols: one row per family from its recipe item's laptop run, with the
    longest item of the family (the protocol's promise: every item within 15 minutes).
    ``loaded``: every item's results (load), by target."""
    rows = []
    for family, target in PROTOCOL_RECIPES.items():
        recipe = [r for r in loaded[target] if r.scale == LAPTOP]
        if not recipe or not recipe[0].runs:
            rows.append([family, f"`make {target} SCALE=laptop`: not measured yet", "", "", ""])
            continue
        run = recipe[0].runs[0]
        acc = run.get("test_acc")
        members = [i for i in ITEMS if i.laptop_protocol == family]
        times = [
            (training_minutes(r.runs), i.target)
            for i in members
            for r in loaded[i.target]
            if r.scale == LAPTOP and r.complete
        ]
        longest = max(times, default=None)
        rows.append([
            family,
            protocol_text(run),
            f"{acc:.4f}" if acc is not None else "–",
            f"{training_minutes(recipe[0].runs):.1f}",
            f"{longest[0]:.1f} (`{longest[1]}`, {len(times)} of {len(members)} items run)"
            if longest
            else "–",
        ])  # fmt: skip
    header = ["family", "protocol", "recipe test acc", "recipe min", "longest item min"]
    return [markdown_table(header, rows)]


HEADER = """# Answers to the course exercises

Written by `make answers-sheet` from the results in [results/](results/) (do not edit it: a
test writes it again from them and fails where the two differ); `make answers` runs the items
first. [EXERCISES.md](../EXERCISES.md) says how to run each item and what it writes.

How to read it: every table row is one variant of the item, labelled by what it changes; with
several seeds a cell shows the mean ± standard deviation over the seeds. A difference between
two variants is called *larger than the seeds' spread* when it exceeds the sum of their
standard deviations, and *not resolved* otherwise; with one seed the spread is unknown. A net
"did not learn" when its test accuracy stays within 0.05 of chance (0.10). Images/s and times
appear where the question is about speed, and at laptop scale (its 15-minute promise); they
were measured on an otherwise idle machine.
"""


LAPTOP_TEXT = """## Laptop scale

The 96-224 px items need a GPU at the course's settings. On a CPU (`make answers` without a GPU,
or `make <item> SCALE=laptop`) they run at their family's laptop protocol (the Makefile's
`LAPTOP_*`): smaller images, narrower nets, fewer images or epochs; the recipe's optimizer,
learning rate and batch size stay. Every variant of an item runs under the same protocol, so
the item's comparison holds within it, but its numbers are not the course recipe's: a proxy.
A protocol was chosen so that its family's recipe reaches at least 0.80 test accuracy and each
of its items takes at most 15 minutes on 2 CPU cores; the table shows what it measured (times
are the summed wall time of an item's runs).
"""


def write_sheet(root: Path) -> Path:
    """Write docs/ANSWERS.md (and its figures) below ``root`` from ``root/docs/results``."""
    docs = root / "docs"
    results_root = root / RESULTS_DIR
    for old in (docs / FIGURES_DIR.name).glob("*.png"):
        old.unlink()  # figures of items that have no results any more
    loaded = {entry.target: load(results_root, entry) for entry in ITEMS}
    sections, measured_items = [], 0
    for section in SECTIONS:
        sections.append(f"## {section}\n")
        for entry in (i for i in ITEMS if i.section == section):
            measured = loaded[entry.target]
            analysed = entry.kind == ANALYZE and (results_root / entry.target / FULL).is_dir()
            measured_items += bool(measured or analysed)
            sections.append(item_section(entry, measured, docs, results_root))
    contents = " · ".join(f"[{s}](#{s.lower().replace(' ', '-')})" for s in SECTIONS)
    body = [
        HEADER,
        f"Items measured: {measured_items} of {len(ITEMS)}. Sections: {contents} · "
        "[Laptop scale](#laptop-scale)\n",
        *sections,
        LAPTOP_TEXT,
        *laptop_section(loaded),
    ]
    sheet = root / SHEET
    with atomic_write(sheet, "w") as f:
        f.write("\n".join(body).rstrip() + "\n")
    return sheet
