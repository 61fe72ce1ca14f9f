"""One table and one figure for a set of runs: what ``cnnlab-report`` writes (cnnlab.cli.report)
and what the answer sheet shows per item (cnnlab.answers.sheet).

Reads the ``results.json`` of every run below a directory (the contract of
cnnlab.runs.results) and builds

* ``report.md``: one row per run, labelled by the overrides that differ between the runs in
  short form (``lr=0.1`` for ``optimizer.lr=0.1`` when no other differing key ends in ``lr``),
  with test and best validation accuracy, final train loss, epochs, parameters, images/s, wall
  time, peak memory and status, sorted by test accuracy. Runs that differ only in ``seed`` share a
  row (mean ± standard deviation and the number of seeds; a value the seeds share, such as the
  epochs, is shown once). Failed, diverged and unfinished runs are listed with their status and
  error; a quick run (``quick=true``, ``make <item> QUICK=1``) and a laptop-scale run
  (``laptop=true``, ``SCALE=laptop``) say so.
* ``curves.png``: validation accuracy per epoch and the training loss of every step (per epoch
  for runs that recorded no steps), one colour per row of the table (the seeds of a row: their
  mean, with a band from their minimum to their maximum), from the ``history`` in results.json
  (the same values TensorBoard shows).
"""

from __future__ import annotations

import math
import statistics
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.runs.results import RESULTS_FILE, epoch_text, read_results
from cnnlab.runs.rundir import SWEEP_FILE
from cnnlab.runs.sweep import short_keys, short_value

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_FILE = "report.md"
CURVES_FILE = "curves.png"
OPTUNA_FILE = "optimization_results.yaml"  # the Optuna sweeper's best trial
# The training split of Fashion-MNIST and MNIST, validation held out of it: SPLIT_SIZES of
# cnnlab.data.sources, not imported so that reports start without torch (a test ties the two).
SPLIT_TRAIN = 60_000
DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}
# Keys that never label a row: seed is what a group averages over; the resume switches say how
# a run was started, not what it is.
UNLABELLED_KEYS = ("seed", "resume", "resume_sweep", "ckpt_path")
# The overrides that choose the net a run trains (Hydra config groups).
SELECTOR_KEYS = ("experiment", "model")


class ReportError(Exception):
    """The directory holds nothing to report on."""


@dataclass
class Run:
    """One run directory and its results.json (``{"status": "missing"}`` when it has none)."""

    path: Path
    results: dict[str, Any]
    overrides: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.overrides = parse_overrides(self.results.get("overrides") or [])

    @property
    def status(self) -> str:
        return str(self.results.get("status", "missing"))

    @property
    def config(self) -> dict[str, Any]:
        return self.results.get("config") or {}

    @property
    def quick(self) -> bool:
        return bool(self.config.get("quick")) or self.overrides.get("quick") in ("true", "True")

    def get(self, key: str) -> float | None:
        value = self.results.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return None if math.isnan(value) else float(value)

    def status_text(self) -> str:
        if self.status == "diverged" and self.results.get("diverged_epoch") is not None:
            return f"diverged ({epoch_text(self.results['diverged_epoch'])})"
        return self.status


@dataclass
class Group:
    """The runs that share a label: one run, or the seeds of one configuration."""

    label: str
    runs: list[Run]

    def values(self, key: str) -> list[float]:
        # Numbers only: a results.json is data and may hold anything (a string, a list).
        values = (run.get(key) for run in self.runs)
        return [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]

    def mean(self, key: str) -> float | None:
        values = self.values(key)
        return statistics.fmean(values) if values else None

    def status_text(self) -> str:
        texts = [run.status_text() for run in self.runs]
        if len(set(texts)) == 1:
            return texts[0]
        counts: dict[str, int] = {}
        for text in texts:
            counts[text] = counts.get(text, 0) + 1
        return ", ".join(f"{n} {text}" for text, n in counts.items())


# --- reading ---------------------------------------------------------------------------------
def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """Hydra task overrides (``model.pool=max``, ``+x=1``, ``++quick=true``) as key -> value."""
    parsed: dict[str, str] = {}
    if isinstance(overrides, str) or not isinstance(overrides, Iterable):
        return parsed  # a results.json is data: it may hold anything
    for override in overrides:
        key, sep, value = str(override).partition("=")
        key = key.lstrip("+~")
        if key:
            parsed[key] = value if sep else ""
    return parsed


def find_runs(root: Path) -> list[Run]:
    """Every run below ``root`` (``root`` itself may be one): directories with a results.json,
    and sweep job directories (Hydra's ``.hydra/`` snapshot) whose job died before writing one."""
    if not root.is_dir():
        raise ReportError(f"no such directory: {root}")
    run_dirs = {p.parent for p in root.rglob(RESULTS_FILE)}
    # Hydra writes multirun.yaml into a sweep dir first, then <job number>/ as each job starts.
    job_dirs = {
        job
        for sweep in root.rglob(SWEEP_FILE)
        for job in sweep.parent.iterdir()
        if job.is_dir() and job.name.isdigit()
    }
    runs = [Run(d, read_results(d) or {}) for d in run_dirs]
    runs += [
        Run(d, {"status": "missing", "error": f"no {RESULTS_FILE}: the job died or still runs"})
        for d in job_dirs - run_dirs
    ]
    if not runs:
        raise ReportError(
            f"no {RESULTS_FILE} below {root}. Give a run directory (outputs/runs/<date>/<time>) "
            f"or a sweep directory (outputs/multirun/<date>/<time>, "
            f"outputs/exercises/<item>/<stamp>) that cnnlab-train wrote."
        )
    return sorted(runs, key=lambda run: _natural_key(run.path.relative_to(root)))


def _natural_key(path: Path) -> list[tuple[int, int | str]]:
    """Sort job directories 0, 1, 2, ..., 10 rather than 0, 1, 10, 2."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in path.parts]


# --- grouping --------------------------------------------------------------------------------
def varying_keys(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value is not the same in every run (first-seen order)."""
    keys: list[str] = []
    for run in runs:
        keys += [key for key in run.overrides if key not in keys]
    varying = [
        key
        for key in keys
        if key not in UNLABELLED_KEYS and len({run.overrides.get(key) for run in runs}) > 1
    ]
    if not any(key in SELECTOR_KEYS for key in varying):
        return varying
    # Runs of different nets (an item comparing AlexNet with LeNet) differ in what their
    # Makefile sweeps add to one net only (a laptop protocol's image size and widths): the
    # experiment and model name the row. A key labels it too where every run sets it (what was
    # swept) or where it varies between runs of one experiment and model.
    return [
        key
        for key in varying
        if key in SELECTOR_KEYS
        or all(key in run.overrides for run in runs)
        or _varies_within_a_net(runs, key)
    ]


def _varies_within_a_net(runs: Sequence[Run], key: str) -> bool:
    values: dict[tuple[str | None, ...], set[str | None]] = {}
    for run in runs:
        net = tuple(run.overrides.get(selector) for selector in SELECTOR_KEYS)
        values.setdefault(net, set()).add(run.overrides.get(key))
    return any(len(v) > 1 for v in values.values())


def common_overrides(runs: Sequence[Run]) -> list[str]:
    """The overrides every run shares (shown once, above the table)."""
    if not runs:
        return []
    first = runs[0].overrides
    return [
        f"{key}={value}"
        for key, value in first.items()
        if key not in UNLABELLED_KEYS and all(run.overrides.get(key) == value for run in runs)
    ]


def run_label(run: Run, keys: Sequence[str], short: bool = False) -> str:
    """The run's values of the varying keys (a key it does not set is left out); ``short``: in
    short form (short_keys, short_value), for people to read."""
    names = short_keys(keys) if short else {key: key for key in keys}
    parts = [
        f"{names[key]}={short_value(run.overrides[key]) if short else run.overrides[key]}"
        for key in keys
        if key in run.overrides
    ]
    if parts:
        return " ".join(parts)
    return f"experiment={run.overrides['experiment']}" if "experiment" in run.overrides else "run"


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Runs with the same overrides but the seed form one group (labelled in short form)."""
    keys = varying_keys(runs)
    mixed_quick = len({run.quick for run in runs}) > 1
    groups: dict[str, Group] = {}
    for run in runs:
        quick = " (quick)" if mixed_quick and run.quick else ""
        label = run_label(run, keys, short=True) + quick
        groups.setdefault(run_label(run, keys) + quick, Group(label, [])).runs.append(run)
    return sort_groups(list(groups.values()))


def sort_groups(groups: list[Group]) -> list[Group]:
    """Best test accuracy first; groups without one after them, best validation accuracy first."""

    def key(group: Group) -> tuple[int, float, float]:
        test, val = group.mean("test_acc"), group.mean("val_acc")
        return (0 if test is not None else 1, -(test or 0.0), -(val or 0.0))

    return sorted(groups, key=key)


# --- formatting ------------------------------------------------------------------------------
def _stat(values: list[float], fmt: Callable[[float], str]) -> str:
    """One value, or the mean ± std of the seeds' values. A value every seed shares (epochs,
    parameters) is shown once, and so is a mean whose std rounds to zero where it is shown: no
    "± 0"."""
    if not values:
        return "–"
    if len(set(values)) == 1:
        return fmt(values[0])
    mean, std = fmt(statistics.fmean(values)), fmt(statistics.stdev(values))
    return mean if _is_zero(std) else f"{mean} ± {std}"


def _is_zero(text: str) -> bool:
    """Whether a formatted number ("0.0000", "0", "0k") shows zero."""
    return not any(char in "123456789" for char in text)


def _count(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.0f}"


COLUMNS: list[tuple[str, str, Callable[[float], str]]] = [
    ("test acc", "test_acc", lambda v: f"{v:.4f}"),
    ("best val acc", "val_acc", lambda v: f"{v:.4f}"),
    ("train loss", "train_loss", lambda v: f"{v:.4f}"),
    ("epochs", "epochs_completed", lambda v: f"{v:.0f}"),
    ("params", "params", _count),
    ("images/s", "train_images_per_s", lambda v: f"{v:.0f}"),
    ("wall s", "wall_s", lambda v: f"{v:.0f}"),
    ("peak MB", "peak_memory_mb", lambda v: f"{v:.0f}"),
]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# The columns that measure speed: meaningful only from an otherwise idle machine.
TIMING_KEYS = ("train_images_per_s", "wall_s")


def results_table(groups: Sequence[Group], timings: bool = True) -> str:
    """The main table: one row per group, the columns that any run has a value for (without
    images/s and wall time where ``timings`` is False)."""
    columns = [
        c
        for c in COLUMNS
        if any(g.values(c[1]) for g in groups) and (timings or c[1] not in TIMING_KEYS)
    ]
    with_seeds = any(len(g.runs) > 1 for g in groups)
    header = ["run", "status", *(c[0] for c in columns)] + (["seeds"] if with_seeds else [])
    rows = []
    for group in groups:
        row = [group.label, group.status_text()]
        row += [_stat(group.values(key), fmt) for _, key, fmt in columns]
        rows.append(row + ([str(len(group.runs))] if with_seeds else []))
    return markdown_table(header, rows)


def grad_norms(groups: Sequence[Group]) -> list[tuple[str, dict[str, float]]]:
    """Each group's mean gradient norm per layer (diagnostics.grad_norms), input to output,
    averaged over its seeds; groups that logged none are left out."""
    per_group: list[tuple[str, dict[str, float]]] = []
    for group in groups:
        norms: dict[str, list[float]] = {}
        for run in group.runs:
            mean_per_layer = (run.results.get("grad_norms") or {}).get("mean_per_layer") or {}
            for layer, value in mean_per_layer.items():
                norms.setdefault(layer, []).append(float(value))
        if norms:
            per_group.append((group.label, {k: statistics.fmean(v) for k, v in norms.items()}))
    return per_group


def grad_norm_findings(groups: Sequence[Group]) -> list[str]:
    """How much of the last layer's gradient norm reaches the first layer, per group."""
    lines = []
    for label, norms in grad_norms(groups):
        first, last = next(iter(norms)), list(norms)[-1]
        if first != last and norms[last] > 0:
            lines.append(
                f"`{label}`: the first layer ({first}) gets a mean gradient norm of "
                f"{norms[first]:.3g}, {norms[first] / norms[last]:.2f} times the last layer's "
                f"({norms[last]:.3g})."
            )
    return lines


def grad_norm_table(groups: Sequence[Group]) -> str | None:
    """Mean gradient norm per layer (diagnostics.grad_norms), one column per group."""
    per_group = grad_norms(groups)
    layers: list[str] = []
    for _, norms in per_group:
        layers += [layer for layer in norms if layer not in layers]
    if not per_group:
        return None
    header = ["layer (input to output)", *(label for label, _ in per_group)]
    rows = [
        [layer, *(f"{norms[layer]:.3g}" if layer in norms else "–" for _, norms in per_group)]
        for layer in layers
    ]
    return markdown_table(header, rows)


def machines(runs: Iterable[Run]) -> str:
    """The machines the runs ran on (results.json ``device``), each once, "; "-separated."""
    return "; ".join(
        sorted({str(run.results["device"]) for run in runs if run.results.get("device")})
    )


# One field of a run's setting: (prefix, value, suffix), so that runs which differ in the value
# alone share one text: "batch 32/64/128".
SettingField = tuple[str, str, str]


def _setting_fields(run: Run) -> tuple[str, list[SettingField]]:
    """The dataset's name and the fields of run_setting, from the run's config."""
    dataset = run.config.get("dataset") or {}
    trainer = run.config.get("trainer") or {}
    total = dataset.get("train_subset") or (SPLIT_TRAIN if dataset.get("name") else None)
    val = dataset.get("val_size")
    fields: list[SettingField] = []
    if isinstance(total, int) and isinstance(val, int):
        held_out = f"{total - val:,} training images ({val:,} held out for validation)"
        fields.append(("", held_out, ""))
    test = dataset.get("test_subset")
    fields.append(("", f"{test:,}" if isinstance(test, int) else "10,000", " test images"))
    if "max_epochs" in trainer:
        epochs = trainer["max_epochs"]
        fields.append(("", str(epochs), " epoch" if epochs == 1 else " epochs"))
    if "batch_size" in dataset:
        fields.append(("batch ", str(dataset["batch_size"]), ""))
    if "image_size" in dataset:
        fields.append(("", str(dataset["image_size"]), " px"))
    return DATASET_NAMES.get(dataset.get("name"), ""), fields


def _setting_text(name: str, fields: Sequence[SettingField]) -> str:
    return (name + ": " if name else "") + ", ".join(f"{a}{v}{b}" for a, v, b in fields)


def run_setting(run: Run) -> str:
    """What a run trained on, from its config: dataset, images, epochs, batch and image size."""
    return _setting_text(*_setting_fields(run))


def run_settings(runs: Iterable[Run]) -> list[str]:
    """The distinct run_setting of the runs that recorded a config, first-seen order; runs whose
    settings differ in one value only share one text ("5/10/20 epochs", "batch 32/64"), as the
    variants of an item that sweeps the epochs or the batch size do. Settings that differ in
    more (AlexNet at 96 px for 15 epochs beside LeNet at 28 px for 30) keep a text each: merged,
    they would not say which value goes with which."""
    settings: list[tuple[str, list[SettingField]]] = []
    for run in runs:
        if run.config and (setting := _setting_fields(run)) not in settings:
            settings.append(setting)
    if len(settings) > 1 and (merged := _merge_one_value(settings)):
        return [merged]
    return [_setting_text(name, fields) for name, fields in settings]


def _merge_one_value(settings: Sequence[tuple[str, list[SettingField]]]) -> str | None:
    """One text for settings that differ in one field's value only, else None."""
    name, first = settings[0]
    if any(n != name or len(fields) != len(first) for n, fields in settings):
        return None
    differing = [i for i in range(len(first)) if len({f[i][1] for _, f in settings}) > 1]
    if len(differing) != 1:
        return None
    i = differing[0]
    prefix, _, suffix = first[i]
    if any(
        fields[i][0] != prefix or fields[i][2].rstrip("s") != suffix.rstrip("s")
        for _, fields in settings
    ):
        return None  # not the same field: "1 epoch" and "5 epochs" are, "batch 32" and "32 px" not
    values = "/".join(fields[i][1] for _, fields in settings)
    suffix = max((fields[i][2] for _, fields in settings), key=len)  # "epochs" over "epoch"
    return _setting_text(name, [*first[:i], (prefix, values, suffix), *first[i + 1 :]])


def quick_note(runs: Sequence[Run]) -> str | None:
    """What a quick run trained on, from its config: the subset, epochs and image size."""
    settings = run_settings(run for run in runs if run.quick)
    if not settings:
        return None
    return (
        "**Quick run** (`QUICK=1`, `quick=true`): " + "; ".join(settings) + ". It answers "
        "nothing: it shows that the experiment runs end to end, and its numbers are not the "
        "course results (docs/ANSWERS.md has those)."
    )


def laptop_note(runs: Sequence[Run]) -> str | None:
    """What a laptop-scale run (``SCALE=laptop``, ``laptop=true``) is: a proxy."""
    if not any(bool(run.config.get("laptop")) for run in runs):
        return None
    return (
        "**Laptop scale** (`SCALE=laptop`, `laptop=true`): the family's laptop protocol, a proxy "
        "for the course recipe at a size a CPU trains in minutes (smaller images, narrower nets, "
        'a subset; docs/ANSWERS.md, "Laptop scale"). Compare its variants with each other, '
        "not with the course recipe's numbers."
    )


# --- findings ---------------------------------------------------------------------------
CHANCE = 0.1  # ten balanced classes
# Test accuracy at most this far above chance: the net did not learn (the recipe's failures sit
# at 0.094-0.10; the weakest net that learns anything is far above).
NOT_TRAINED_MARGIN = 0.05


def _acc(group: Group) -> tuple[float, float | None] | None:
    values = group.values("test_acc")
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _fmt(acc: tuple[float, float | None]) -> str:
    """``mean ± std`` as the table shows it: no "± 0.0000" where the seeds agree."""
    mean, std = acc
    spread = f"{std:.4f}" if std is not None else ""
    return f"{mean:.4f}" + (f" ± {spread}" if spread and not _is_zero(spread) else "")


def trained(group: Group) -> bool:
    acc = _acc(group)
    return acc is not None and acc[0] > CHANCE + NOT_TRAINED_MARGIN


def failure(group: Group) -> str:
    """Why a group has no usable accuracy: diverged, failed, or at chance."""
    statuses = {run.status for run in group.runs}
    loss = group.values("train_loss")
    acc = _acc(group)
    text = f"did not learn: test accuracy {_fmt(acc)}" if acc else "no test accuracy"
    if statuses - {"ok"}:
        text = f"{group.status_text()}; {text}"
    if loss:
        text += f", final training loss {statistics.fmean(loss):.2f}"
    return text + " (chance: 0.10, loss ln 10 = 2.30)"


def compare(group: Group, other: Group) -> str:
    """``group`` against ``other`` in test accuracy, and whether the seeds resolve it."""
    a, b = _acc(group), _acc(other)
    if a is None or b is None:
        return ""
    diff = a[0] - b[0]
    if a[1] is None or b[1] is None:
        verdict = "one seed, so the seeds' spread is unknown"
    elif abs(diff) > a[1] + b[1]:
        verdict = "larger than the seeds' spread"
    else:
        verdict = "within the seeds' spread: not resolved"
    return f"{diff:+.4f} ({verdict})"


def baseline_group(groups: Sequence[Group], baseline: str | None) -> Group | None:
    """The group labelled ``baseline`` (None if there is none)."""
    if baseline is None or len(groups) < 2:
        return None
    return next((g for g in groups if g.label == baseline), None)


MAX_COMPARED = 6  # variants compared one by one with the best; more are summed up


def _one_seed(groups: Sequence[Group]) -> bool:
    return all(len(g.runs) == 1 for g in groups)


def findings(groups: Sequence[Group], baseline: str | None = None) -> list[str]:
    """Sentences that state what the table measured: each variant's test accuracy against the
    baseline's (the group labelled ``baseline``; else the best), with whether the seeds resolve
    the difference, and the variants that did not learn."""
    failed = [g for g in groups if not trained(g)]
    working = [g for g in groups if trained(g)]
    lines = []
    if len(groups) == 1:
        group = groups[0]
        acc = _acc(group)
        if acc and trained(group):
            seeds = f" over {len(group.runs)} seeds" if len(group.runs) > 1 else ""
            lines.append(f"Test accuracy {_fmt(acc)}{seeds}.")
        else:
            lines.append(f"The net {failure(group)}.")
        return lines
    base = baseline_group(groups, baseline)
    if working:
        best = working[0]  # groups are sorted best test accuracy first
        lines.append(f"Best test accuracy: `{best.label}`.")
        reference = base if base is not None and trained(base) else best
        name = "the recipe" if reference is base else "the best"
        others = [g for g in working if g is not reference]
        if reference is best and len(others) > MAX_COMPARED:
            # A search (Optuna's trials) has no recipe row: its spread says more than a list.
            accs = [a[0] for g in others if (a := _acc(g))]
            lines[-1] = f"Best test accuracy: `{best.label}`, {_fmt(_acc(best))}."
            lines.append(
                f"The other {len(others)} runs reached {min(accs):.4f} to {max(accs):.4f}"
                + (" (one seed each: the seeds' spread is unknown)." if _one_seed(others) else ".")
            )
            others = []
        for group in others:
            lines.append(
                f"`{group.label}`: {_fmt(_acc(group))}, {compare(group, reference)} against "
                f"{name} (`{reference.label}`, {_fmt(_acc(reference))})."
            )
    for group in failed:
        lines.append(f"`{group.label}` {failure(group)}.")
    return lines


# --- figure ----------------------------------------------------------------------------------
CURVES = (("val/acc", "validation accuracy"), ("train/loss", "training loss"))
# The training loss of every step (results.json history), drawn instead of the per-epoch one
# where every run has it: short runs and the first steps of training get a curve too.
STEP_LOSS = "train/loss_step"
LINESTYLES = ("-", "--", ":", "-.")


def curve_styles(count: int) -> list[tuple[str, str]]:
    """(colour, line style) for ``count`` variants, different for up to 40: tab10's ten colours,
    then their light tab20 partners dashed, then both again dotted and dash-dotted."""
    from matplotlib import colormaps, colors

    tab20 = [colors.to_hex(c) for c in colormaps["tab20"].colors]
    palette = tab20[0::2] + tab20[1::2]  # tab20's even entries are tab10's colours
    return [(palette[i % 20], LINESTYLES[(i // 10) % len(LINESTYLES)]) for i in range(count)]


@dataclass
class Curve:
    """One variant's values of one metric per epoch (epoch 1 first); with several seeds, the
    mean and the min-max band over the seeds that reached that epoch."""

    mean: list[float]
    low: list[float]
    high: list[float]
    seeds: int

    @classmethod
    def of(cls, series: Sequence[Sequence[float]]) -> Curve | None:
        epochs = max((len(values) for values in series), default=0)
        mean, low, high = [], [], []
        for epoch in range(epochs):
            values = [v[epoch] for v in series if len(v) > epoch and _finite(v[epoch])]
            if not values:  # a diverged run records inf/NaN; no point to draw there
                values = [math.nan]
            mean.append(statistics.fmean(values))
            low.append(min(values))
            high.append(max(values))
        return cls(mean, low, high, len(series)) if epochs else None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def group_curves(group: Group) -> dict[str, Curve]:
    """The group's curve of each metric its runs have a per-epoch history of."""
    histories = [run.results.get("history") or {} for run in group.runs]
    curves = {}
    for metric in [metric for metric, _ in CURVES] + [STEP_LOSS]:
        curve = Curve.of([history[metric] for history in histories if history.get(metric)])
        if curve is not None:
            curves[metric] = curve
    return curves


def legend_label(group: Group, curves: dict[str, Curve], width: int = 75) -> str:
    """The row's label (and its number of seeds), wrapped between overrides when long."""
    seeds = max(curve.seeds for curve in curves.values())
    label = group.label + (f" ({seeds}\N{NO-BREAK SPACE}seeds)" if seeds > 1 else "")
    return textwrap.fill(label, width, break_long_words=False, break_on_hyphens=False)


def curves_figure(groups: Sequence[Group]) -> Figure | None:
    """Validation accuracy per epoch and training loss per step (per epoch where a run has no
    steps recorded): one colour (and one legend entry) per group, in the table's order, the
    legend below the plots; None if no run has a finished epoch."""
    drawn = [(group, curves) for group in groups if (curves := group_curves(group))]
    if not drawn:
        return None

    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in tests
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    labels = [legend_label(group, curves) for group, curves in drawn]
    styles = curve_styles(len(drawn))
    # The legend goes below the plots, in as many columns as the longest label leaves room for,
    # and the figure grows by its height so the plots keep theirs; savefig(bbox_inches="tight")
    # keeps whatever still sticks out.
    longest = max(len(line) for label in labels for line in label.splitlines())
    columns = max(1, min(len(labels), int(11.5 / (0.6 + 0.065 * longest))))
    rows = [labels[i : i + columns] for i in range(0, len(labels), columns)]
    legend_lines = sum(max(label.count("\n") + 1 for label in row) for row in rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5 + 0.2 * legend_lines), layout="constrained")
    per_step = all(STEP_LOSS in curves for _, curves in drawn)
    panels = [(*CURVES[0], "epoch"), (STEP_LOSS, "training loss", "step") if per_step
              else (*CURVES[1], "epoch")]  # fmt: skip
    handles = []
    for (group, curves), (colour, style) in zip(drawn, styles, strict=True):
        line = {"color": colour, "linestyle": style}
        for ax, (metric, _, unit) in zip(axes, panels, strict=True):
            curve = curves.get(metric)
            if curve is None:
                continue
            x = range(1, len(curve.mean) + 1)
            marks = {"marker": "o", "markersize": 3} if unit == "epoch" else {}
            width = 1.6 if unit == "epoch" else 0.9
            ax.plot(x, curve.mean, label=group.label, linewidth=width, **line, **marks)
            if curve.seeds > 1:
                ax.fill_between(x, curve.low, curve.high, color=colour, alpha=0.18, lw=0)
        handles.append(Line2D([], [], linewidth=1.6, marker="o", markersize=3, **line))
    for ax, (metric, name, unit) in zip(axes, panels, strict=True):
        ax.set(xlabel=unit, ylabel=name, title=metric)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)

    with_seeds = any(c.seeds > 1 for _, curves in drawn for c in curves.values())
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=columns,
        fontsize="small",
        frameon=False,
        title="several seeds: line = their mean, shaded = their minimum to maximum"
        if with_seeds
        else None,
        title_fontsize="small",
    )
    return fig


def plot_curves(groups: Sequence[Group], path: Path) -> bool:
    """Write curves_figure to ``path``; False if no run has a finished epoch."""
    fig = curves_figure(groups)
    if fig is None:
        return False
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return True


# --- the report ------------------------------------------------------------------------------
@dataclass
class Report:
    markdown: str
    table: str
    report_path: Path
    curves_path: Path | None
    groups: list[Group]


def build_report(root: Path, out_dir: Path | None = None) -> Report:
    """Read the runs below ``root``, write report.md (and curves.png) into ``out_dir`` (default
    ``root``) and return what was written."""
    root = root.resolve()
    out_dir = (out_dir or root).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = find_runs(root)
    groups = group_runs(runs)
    table = results_table(groups)
    curves_path = out_dir / CURVES_FILE
    has_curves = plot_curves(groups, curves_path)

    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    devices = machines(runs)
    counted = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    parts = [
        f"# Report: {root.name}",
        "",
        f"- Directory: `{root}`",
        f"- Runs: {len(runs)} ({counted})",
    ]
    if devices:
        parts.append("- Machine: " + devices)
    common = common_overrides(runs)
    if common:
        parts.append("- Overrides of every run: `" + " ".join(common) + "`")
    for note in (quick_note(runs), laptop_note(runs)):
        if note:
            parts += ["", note]
    parts += ["", table, ""]
    peak_kinds = {run.results.get("peak_memory_kind") for run in runs} - {None}
    if "process_peak_rss" in peak_kinds:
        parts.append("peak MB: CUDA peak allocation on a GPU, the process's peak RSS on a CPU.")
    if any(len(group.runs) > 1 for group in groups):
        parts.append(
            "Rows with several seeds show mean ± standard deviation over the seeds, or one value "
            "where the seeds agree at the precision shown."
        )
    if len(groups) > 1:
        parts += [
            "",
            "## Findings",
            "",
            "Test accuracy of each row against the best one. A difference counts as larger than "
            "the seeds' spread when it exceeds the sum of the two rows' standard deviations "
            '(`ARGS="seed=0,1,2"` gives each row three seeds).',
            "",
            *(f"- {line}" for line in findings(groups)),
        ]
    norms = grad_norm_table(groups)
    if norms:
        parts += ["", "## Gradient norm per layer (mean over the logged steps)", "", norms]
    unfinished = [run for run in runs if run.status != "ok"]
    if unfinished:
        parts += ["", "## Runs that did not finish normally", ""]
        labels = {id(run): group.label for group in groups for run in group.runs}
        for run in unfinished:
            error = str(run.results.get("error", "")).strip().splitlines()
            parts.append(
                f"- `{run.path.relative_to(root) if run.path != root else '.'}` "
                f"({labels[id(run)]}) {run.status_text()}"
                + (f": {error[0][:300]}" if error else "")
            )
    optuna = sorted(root.rglob(OPTUNA_FILE))
    for path in optuna:
        parts += ["", f"## Optuna: best trial (`{path.relative_to(root)}`)", "", "```yaml"]
        parts += [path.read_text().rstrip(), "```"]
    parts += [""]
    if has_curves:
        parts += [f"![validation accuracy and training loss]({CURVES_FILE})", ""]
    parts += [f"TensorBoard (hparams tab included): `make tensorboard DIR={root}`", ""]
    report_path = out_dir / REPORT_FILE
    markdown = "\n".join(parts)
    report_path.write_text(markdown)
    return Report(markdown, table, report_path, curves_path if has_curves else None, groups)
