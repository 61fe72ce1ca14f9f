"""LitClassifier's per-step bookkeeping: exact epoch metrics, divergence, attribute handling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.training.lit import (
    ConfusionCounts,
    DivergedError,
    EpochTotals,
    LitClassifier,
    scalar_name,
)


def test_epoch_totals_are_exact_over_uneven_batches() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(250, 10), torch.randint(0, 10, (250,))
    totals = EpochTotals()
    for start in range(0, 250, 64):  # 64, 64, 64, 58: the last batch is short
        x, y = logits[start : start + 64], labels[start : start + 64]
        totals.update(x, y, F.cross_entropy(x, y))
    summary = totals.compute()
    assert summary["acc"] == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
    assert summary["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)
    totals.reset()
    assert all(math.isnan(v) for v in totals.compute().values())  # no batch: no number


def test_epoch_totals_do_not_keep_the_graph() -> None:
    weight = torch.ones(3, requires_grad=True)
    logits = torch.randn(4, 3) * weight
    totals = EpochTotals()
    totals.update(logits, torch.zeros(4, dtype=torch.long), logits.sum())
    assert totals.loss_sum is not None and not totals.loss_sum.requires_grad


def test_confusion_counts_are_exact_over_uneven_batches() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(250, 4), torch.randint(0, 4, (250,))
    confusion = ConfusionCounts()
    for start in range(0, 250, 64):
        confusion.update(logits[start : start + 64], labels[start : start + 64])
    matrix = confusion.compute()
    predicted = logits.argmax(1)
    assert matrix == [
        [int(((labels == t) & (predicted == p)).sum()) for p in range(4)] for t in range(4)
    ]
    confusion.reset()
    assert confusion.compute() == [[0] * 4 for _ in range(4)]  # known size, no batch: zeros
    assert ConfusionCounts().compute() is None
    assert scalar_name("T-shirt/top") == "T-shirt_top" and scalar_name("Ankle boot") == "Ankle_boot"


def _lit() -> LitClassifier:
    return LitClassifier(nn.Linear(4, 3), torch.optim.SGD)


def test_nan_loss_on_cpu_raises_at_its_own_step() -> None:
    lit = _lit()  # default check interval: every step on CPU
    lit._check_finite(torch.tensor(1.0), 0, 10)
    with pytest.raises(DivergedError) as info:
        lit._check_finite(torch.tensor(float("nan")), 1, 11)
    assert info.value.step == 11


def test_plain_attributes_are_set_directly_and_modules_still_registered() -> None:
    lit = _lit()
    lit._current_fx_name = "training_step"  # Lightning's bookkeeping: the fast path
    assert lit._current_fx_name == "training_step"
    lit.extra = 1
    lit.extra = nn.Linear(2, 2)  # a module replacing a plain attribute is registered
    assert "extra" in lit._modules and "extra" not in lit.__dict__
    lit.scale = nn.Parameter(torch.ones(1))
    assert "scale" in dict(lit.named_parameters())
    lit.model = nn.Linear(4, 5)  # replacing a submodule keeps it a submodule
    assert lit._modules["model"].out_features == 5
