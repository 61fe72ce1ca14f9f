"""The seeds a run derives from its ``seed``: one per epoch (the data order and augmentation
draws) and one per training batch (dropout and other stochastic layers). Each depends only on
where in the run it is, so a resumed run draws what the uninterrupted one would have."""

from __future__ import annotations


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def batch_seed(seed: int, epoch: int, batch_idx: int, rank: int = 0) -> int:
    """The global RNG seed of one training batch; DDP ranks differ."""
    return ((epoch_seed(seed, epoch) * 1_000_033 + batch_idx) * 1_009 + rank) % 2**63
