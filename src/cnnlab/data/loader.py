"""Batches by index slicing: the data path's replacement for Dataset + DataLoader.

The whole split is one uint8 tensor; a batch is ``images[perm[i:i + B]]``. No per-sample Python,
no collate, no worker processes. The order of an epoch (and its augmentation draws) depends only
on (seed, epoch), so a resumed run sees exactly the batches the uninterrupted one would have.
Under DDP each rank takes a disjoint, equally long share of every epoch's permutation.

The loader is resumable mid-epoch: Lightning saves its ``state_dict()`` (the epoch and how many
batches training consumed) in every checkpoint and hands it back through ``load_state_dict()``
on resume, so the epoch continues with the next unseen batch of the same permutation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from cnnlab.seeds import epoch_seed


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # A fresh generator per (seed, epoch): no hidden state carried from one epoch to the next.
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


class IndexBatchLoader:
    """Iterates ``(images_uint8, labels[, aug_params])`` batches of one split.

    ``epoch_fn`` returns the current epoch (the Trainer's) when an iteration starts.
    ``augment_shift`` > 0 draws per-sample crop offsets in [0, 2*shift]; ``augment_flip`` draws
    horizontal flips. Both are applied later, per batch, on the device that trains.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        epoch_fn: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        augment_flip: bool = False,
        augment_shift: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch_fn, self.rank, self.world_size = epoch_fn, rank, world_size
        self.augment_flip, self.augment_shift = augment_flip, augment_shift
        # Training shards are cut to equal length so every rank runs the same number of steps
        # (DDP would hang otherwise); evaluation shards keep every sample (metrics sync at the end).
        n = images.shape[0]
        self.samples_per_rank = n // world_size if shuffle else math.ceil((n - rank) / world_size)
        # Progress of the current pass, for state_dict(); a pending resume point, for __iter__.
        # Lightning fetches ahead only from loaders without a length (_PrefetchDataFetcher), so
        # with this one every batch yielded has been trained on when a checkpoint is written.
        self._epoch, self._yielded = 0, 0
        self._resume_at: tuple[int, int] | None = None

    @property
    def augments(self) -> bool:
        return self.augment_flip or self.augment_shift > 0

    def __len__(self) -> int:
        return math.ceil(self.samples_per_rank / self.batch_size)

    def _epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = self.images.shape[0]
        if not self.shuffle:
            return torch.arange(self.rank, n, self.world_size), None
        gen = epoch_generator(self.seed, epoch)
        order = torch.randperm(n, generator=gen)
        aug = None
        if self.augments:
            flips = torch.randint(0, 2, (n,), generator=gen) * int(self.augment_flip)
            shifts = torch.randint(0, 2 * self.augment_shift + 1, (n, 2), generator=gen)
            aug = torch.cat([flips[:, None], shifts], dim=1)
        mine = order[self.rank :: self.world_size][: self.samples_per_rank]
        return mine, (aug[mine] if aug is not None else None)

    def state_dict(self) -> dict[str, int]:
        """Where training stands in the current epoch: ``{"epoch", "batches"}`` consumed."""
        return {"epoch": self._epoch, "batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next pass over ``state["epoch"]`` start after its first ``batches`` batches."""
        self._resume_at = (int(state["epoch"]), int(state["batches"]))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch = self.epoch_fn()
        skip = 0
        if self._resume_at is not None and self._resume_at[0] == epoch:
            skip = self._resume_at[1]
        self._resume_at = None
        self._epoch, self._yielded = epoch, skip
        order, aug = self._epoch_plan(epoch)
        order = order.to(self.images.device)
        if aug is not None:
            aug = aug.to(self.images.device)
        for start in range(skip * self.batch_size, order.shape[0], self.batch_size):
            idx = order[start : start + self.batch_size]
            self._yielded += 1
            if aug is None:
                yield self.images[idx], self.labels[idx]
            else:
                yield self.images[idx], self.labels[idx], aug[start : start + self.batch_size]
