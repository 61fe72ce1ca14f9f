"""The one data path of every run: the split as a uint8 tensor, batches by index slicing, and
float conversion / augmentation / resize / normalisation per batch on the training device."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from cnnlab.data.loader import IndexBatchLoader, epoch_generator
from cnnlab.data.sources import get_spec, load_split, locate
from cnnlab.data.transforms import augment_uint8, pixel_mean_std, to_model_input

AUGMENTS = ("hflip", "crop")
CROP_SHIFT = 4  # pixels of zero padding for the random shifted crop, at 28 px


class IDXDataModule(L.LightningDataModule):
    """Fashion-MNIST or MNIST from IDX files, held whole in memory (55 MB as uint8).

    Validation is ``val_size`` images held out of the training split with a seeded permutation;
    the test split is the 10,000 official test images. On a GPU the tensors move to the device
    once, so a batch never crosses the PCIe bus.
    """

    def __init__(
        self,
        name: str = "fashion_mnist",
        root: str | Path | None = None,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        val_size: int = 5000,
        train_subset: int | None = None,
        test_subset: int | None = None,
        normalize: bool = True,
        augment: Sequence[str] = (),
        seed: int = 0,
        channels_last: bool = False,
        root_only: bool = False,
    ) -> None:
        super().__init__()
        self.spec = get_spec(name)
        _check_positive(
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            image_size=image_size,
            in_channels=in_channels,
        )
        if num_classes != len(self.spec.classes):
            raise ValueError(
                f"dataset.num_classes={num_classes} but {name} has {len(self.spec.classes)} classes"
            )
        if not isinstance(val_size, int) or not 0 <= val_size < 60_000:
            raise ValueError(f"dataset.val_size must be in 0..59999, got {val_size!r}")
        for key, subset in (("train_subset", train_subset), ("test_subset", test_subset)):
            # None means all images; 0 must not mean it too (a 0 that was meant as "none").
            if subset is not None and (not isinstance(subset, int) or subset < 1):
                raise ValueError(
                    f"dataset.{key} must be None or a positive integer, got {subset!r}"
                )
        unknown = set(augment) - set(AUGMENTS)
        if unknown:
            raise ValueError(
                f"unknown dataset.augment {sorted(unknown)}; choose from {list(AUGMENTS)}"
            )
        # root_only: a root given explicitly is the only place the data is read from
        # (cnnlab.training.build.build_datamodule sets it; cnnlab.data.sources.locate).
        self.name, self.root, self.root_only = name, root, root_only
        self.in_channels, self.image_size = in_channels, image_size
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.train_subset, self.test_subset = val_size, train_subset, test_subset
        self.normalize, self.augment = normalize, tuple(augment)
        self.seed, self.channels_last = seed, channels_last
        self.mean: float | None = None
        self.std: float | None = None
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    def prepare_data(self) -> None:
        # Runs on one process per node: the only place a download may happen.
        locate(self.name, self.root, root_only=self.root_only)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        images, labels = load_split(self.name, self.root, "train", self.root_only)
        # The validation hold-out is a fixed seeded permutation, independent of the training
        # order, so changing the training seed never changes which images are validated on.
        order = torch.randperm(images.shape[0], generator=epoch_generator(self.seed, -1))
        val_idx, train_idx = order[: self.val_size], order[self.val_size :]
        train_images = images[train_idx]
        if self.normalize:
            self.mean, self.std = pixel_mean_std(train_images)
        if self.train_subset:
            train_idx = train_idx[: self.train_subset]
            train_images = images[train_idx]
        self.splits["train"] = (train_images, labels[train_idx])
        if self.val_size:
            self.splits["val"] = (images[val_idx], labels[val_idx])
        test_images, test_labels = load_split(self.name, self.root, "test", self.root_only)
        if self.test_subset:
            test_images, test_labels = (
                test_images[: self.test_subset],
                test_labels[: self.test_subset],
            )
        self.splits["test"] = (test_images, test_labels)

    # --- loaders
    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _on_device(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        # On a GPU the whole split lives on the device (55 MB): batches are sliced there.
        device = self._device()
        images, labels = self.splits[split]
        if device.type != "cpu" and images.device != device:
            images, labels = images.to(device), labels.to(device)
            self.splits[split] = (images, labels)
        return images, labels

    def _loader(self, split: str, train: bool) -> IndexBatchLoader:
        images, labels = self._on_device(split)
        trainer = self.trainer
        # trainer.overfit_batches (debug=overfit) means the same batches every epoch: Lightning
        # turns shuffling off only in DataLoaders, this loader is not one.
        overfit = trainer is not None and bool(trainer.overfit_batches)
        return IndexBatchLoader(
            images,
            labels,
            self.batch_size if train else self.eval_batch_size,
            shuffle=train and not overfit,
            seed=self.seed,
            epoch_fn=(lambda: trainer.current_epoch) if trainer is not None else (lambda: 0),
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            augment_flip=train and "hflip" in self.augment,
            augment_shift=CROP_SHIFT if train and "crop" in self.augment else 0,
        )

    def train_dataloader(self) -> IndexBatchLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> IndexBatchLoader | list:
        return self._loader("val", train=False) if "val" in self.splits else []

    def test_dataloader(self) -> IndexBatchLoader:
        return self._loader("test", train=False)

    # --- per-batch transforms on the device ------------------------------------------------------
    def transfer_batch_to_device(
        self, batch: tuple, device: torch.device, dataloader_idx: int
    ) -> tuple:
        # The splits live on the training device already (_on_device), so the batches are born
        # there: skip Lightning's generic walk over the batch (tens of microseconds a step).
        tensors = (batch,) if isinstance(batch, torch.Tensor) else batch
        if all(isinstance(t, torch.Tensor) and t.device == device for t in tensors):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: tuple, dataloader_idx: int) -> tuple:
        if isinstance(batch, torch.Tensor):  # the model summary's example: a model input already
            return batch
        images, labels, *aug = batch
        if aug:
            images = augment_uint8(images, aug[0], CROP_SHIFT if "crop" in self.augment else 0)
        return self.transform(images), labels

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 28, 28] -> the model's float input [N, C, S, S]."""
        return to_model_input(
            images, self.image_size, self.mean, self.std, self.in_channels, self.channels_last
        )


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"dataset.{key} must be a positive integer, got {value!r}")
