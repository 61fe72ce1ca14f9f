"""``cnnlab-eval``: test a trained model on the full test split.

    cnnlab-eval run_dir=outputs/runs/2025-01-01/12-00-00-000000    # its best checkpoint
    cnnlab-eval ckpt_path=outputs/runs/<date>/<time>/checkpoints/last.ckpt
    cnnlab-eval run_dir=... device=cpu

It writes into its own directory (outputs/eval/<date>/<time>/):

- ``eval.json``: test_acc, test_loss, per_class_acc (by class name), confusion_matrix (rows: true
  class, columns: predicted), the classes, the checkpoint, the run's overrides, the device;
- ``confusion_matrix.png``: the counts, coloured per row, each row with its class's accuracy.

The model and data config are rebuilt from conf/ and the run's recorded overrides
(cnnlab.runs.rebuild); nothing stored in the run directory chooses what gets instantiated.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from cnnlab.errors import exit_on_user_error
from cnnlab.resolvers import config_dir
from cnnlab.runs.rebuild import refuse_pickled_rerun

EVAL_FILE = "eval.json"
FIGURE_FILE = "confusion_matrix.png"


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the model of ``run_dir=``/``ckpt_path=``; write eval.json and the figure into
    ``cfg.paths.output_dir``; return eval.json's contents."""
    from cnnlab.analysis.confusion import confusion_figure, per_class_accuracy
    from cnnlab.devices import device_description, pick_device
    from cnnlab.runs.rebuild import config_drift, rebuild_config, run_source
    from cnnlab.runs.results import write_json_atomic
    from cnnlab.training.evaluate import evaluate_checkpoint

    out_dir = Path(cfg.paths.output_dir)
    device = pick_device(str(cfg.device))
    source = run_source(cfg.run_dir, cfg.ckpt_path)
    run_cfg = rebuild_config(source.overrides, source=source.overrides_from)
    drift = config_drift(run_cfg, source.recorded_config)
    result = evaluate_checkpoint(run_cfg, source.checkpoint, source.checkpoint_path, device)

    out_dir.mkdir(parents=True, exist_ok=True)
    images = sum(sum(row) for row in result.confusion)
    figure = out_dir / FIGURE_FILE
    name = source.checkpoint_path.name
    if source.run_dir is not None:
        name = f"{source.run_dir.name}/{name}"
    fig = confusion_figure(
        result.confusion,
        result.classes,
        f"{name}: test acc {result.test_acc:.4f} on {images:,} images",
    )
    fig.savefig(figure)
    summary = {
        "command": "eval",
        "test_acc": result.test_acc,
        "test_loss": result.test_loss,
        "per_class_acc": per_class_accuracy(result.confusion, result.classes),
        "confusion_matrix": result.confusion,
        "classes": list(result.classes),
        "test_images": images,
        "dataset": str(run_cfg.dataset.name),
        "checkpoint": str(source.checkpoint_path),
        "epoch": source.checkpoint.get("epoch"),
        "global_step": source.checkpoint.get("global_step"),
        "run_dir": str(source.run_dir) if source.run_dir is not None else None,
        "overrides": source.overrides,
        "overrides_from": source.overrides_from,
        "device": device_description(device),
        "precision": result.precision,
        # Where conf/ + overrides no longer give the config the run recorded: the numbers above
        # are then of a model built differently from the one that was trained.
        "config_drift": drift,
        "files": {"eval": str(out_dir / EVAL_FILE), "confusion_matrix": str(figure)},
    }
    write_json_atomic(out_dir / EVAL_FILE, summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """Accuracy and loss, the weakest class, the most frequent confusion, where the files are."""
    from rich.console import Console

    from cnnlab.analysis.confusion import worst_confusion

    console = Console(soft_wrap=True)  # paths stay whole on one line, to copy and paste
    console.print(
        f"[bold]test_acc={summary['test_acc']:.4f}[/bold], test_loss={summary['test_loss']:.4f} "
        f"on {summary['test_images']:,} test images of {summary['dataset']} "
        f"({summary['device']})",
        highlight=False,
    )
    console.print(f"checkpoint:  {summary['checkpoint']} (epoch {summary['epoch']})")
    rated = {k: v for k, v in summary["per_class_acc"].items() if v is not None}
    if rated:
        weakest = min(rated, key=rated.__getitem__)
        console.print(f"weakest:     {weakest} ({rated[weakest]:.4f})", highlight=False)
    worst = worst_confusion(summary["confusion_matrix"], summary["classes"])
    if worst is not None:
        true, predicted, count = worst
        console.print(f"most confused: {true} -> {predicted}: {count}", highlight=False)
    if summary["config_drift"]:
        shown = "; ".join(summary["config_drift"][:5])
        more = len(summary["config_drift"]) - 5
        console.print(
            f"[bold]warning[/bold]: the config rebuilt from conf/ and the run's overrides differs "
            f"from the one the run recorded ({shown}{f'; {more} more' if more > 0 else ''}). "
            f"conf/ has changed since the run, or the run recorded no overrides: these numbers "
            f"may be of another model.",
            highlight=False,
        )
    console.print(f"results:     {summary['files']['eval']}", highlight=False)
    console.print(f"figure:      {summary['files']['confusion_matrix']}", highlight=False)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
@exit_on_user_error
def _main(cfg: DictConfig) -> None:
    print_summary(evaluate(cfg))


def main() -> None:
    """The ``cnnlab-eval`` console script."""
    refuse_pickled_rerun(sys.argv[1:])  # Hydra's --experimental-rerun unpickles a run's file
    _main()


if __name__ == "__main__":
    main()
