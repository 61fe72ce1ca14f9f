"""Accuracy per class and the confusion matrix of a test pass: the numbers (plain lists, for JSON)
and the figure. Counts come from cnnlab.training.lit.ConfusionCounts; rows are the true class,
columns the predicted one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Matrix = Sequence[Sequence[int]]


def per_class_accuracy(matrix: Matrix, classes: Sequence[str]) -> dict[str, float | None]:
    """{class name: the share of its test images classified right}; None for a class with no
    test image (a test subset can miss one), since NaN is not JSON."""
    accuracy: dict[str, float | None] = {}
    for i, name in enumerate(classes):
        total = sum(matrix[i])
        accuracy[name] = matrix[i][i] / total if total else None
    return accuracy


def overall_accuracy(matrix: Matrix) -> float | None:
    """trace / total: the test accuracy the matrix implies."""
    total = sum(sum(row) for row in matrix)
    return sum(matrix[i][i] for i in range(len(matrix))) / total if total else None


def worst_confusion(matrix: Matrix, classes: Sequence[str]) -> tuple[str, str, int] | None:
    """(true class, predicted class, count) of the largest off-diagonal cell, or None when
    every image was classified right."""
    best: tuple[str, str, int] | None = None
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if i != j and count and (best is None or count > best[2]):
                best = (classes[i], classes[j], int(count))
    return best


def confusion_figure(matrix: Matrix, classes: Sequence[str], title: str | None = None) -> Figure:
    """The matrix as a heat map: colours normalised per row (the share of a true class's images
    that went to each column, so rare and common classes read alike), the counts written in the
    cells, each row labelled with its class's accuracy.

    Built on a bare Figure with the Agg canvas, never pyplot: the training process (TensorBoard)
    and headless machines need no display, and no global backend is switched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(classes)
    totals = [sum(row) for row in matrix]
    shares = [[c / t if t else 0.0 for c in row] for row, t in zip(matrix, totals, strict=True)]
    accuracy = per_class_accuracy(matrix, classes)

    size = max(5.0, 0.62 * n + 2.5)
    # Constrained layout keeps the rotated class names and the axis labels inside the image.
    fig = Figure(figsize=(size + 1.0, size), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    big = max((max(row) for row in matrix), default=0)
    fontsize = 8 if big < 1000 else 7
    for i in range(n):
        for j in range(n):
            count = int(matrix[i][j])
            if count:  # empty cells stay blank: the mistakes stand out
                colour = "white" if shares[i][j] > 0.5 else "black"
                ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=fontsize)
    ax.set_xticks(range(n), labels=list(classes), rotation=45, ha="right", fontsize=8)
    row_labels = [
        f"{name} ({acc:.0%})" if acc is not None else f"{name} (-)"
        for name, acc in accuracy.items()
    ]
    ax.set_yticks(range(n), labels=row_labels, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (accuracy)")
    if title:
        ax.set_title(title, fontsize=10)
    return fig
