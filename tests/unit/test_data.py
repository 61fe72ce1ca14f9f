"""The DataModule on the real datasets: splits, dtypes, determinism, per-batch transforms."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab.data import DatasetNotFoundError, IDXDataModule, locate, write_idx
from cnnlab.data.loader import IndexBatchLoader
from conftest import requires_mnist


@pytest.fixture(scope="module")
def fashion() -> IDXDataModule:
    dm = IDXDataModule("fashion_mnist", root=None, val_size=5000)
    dm.setup()
    return dm


def test_split_sizes_and_dtypes(fashion: IDXDataModule) -> None:
    sizes = {split: images.shape for split, (images, _) in fashion.splits.items()}
    assert sizes == {"train": (55_000, 28, 28), "val": (5_000, 28, 28), "test": (10_000, 28, 28)}
    for images, labels in fashion.splits.values():
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    # Whole splits as uint8: the memory budget of the design (~55 MB for all of Fashion-MNIST).
    total = sum(i.numel() for i, _ in fashion.splits.values())
    assert total == 70_000 * 784


def test_validation_holdout_is_disjoint_and_seeded(fashion: IDXDataModule) -> None:
    again = IDXDataModule("fashion_mnist", root=None, val_size=5000)
    again.setup()
    assert torch.equal(again.splits["val"][0], fashion.splits["val"][0])
    train_rows = {bytes(row) for row in fashion.splits["train"][0][:5000].flatten(1).numpy()}
    val_rows = {bytes(row) for row in fashion.splits["val"][0][:500].flatten(1).numpy()}
    assert len(train_rows & val_rows) <= 2  # Fashion-MNIST has a few exact duplicates, no overlap


def test_train_batches_shapes_and_normalisation(fashion: IDXDataModule) -> None:
    loader = fashion.train_dataloader()
    assert len(loader) == -(-55_000 // 256)
    images, labels = fashion.on_after_batch_transfer(next(iter(loader)), 0)
    assert images.shape == (256, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (256,)
    assert abs(float(images.mean())) < 0.15 and 0.85 < float(images.std()) < 1.15


def test_batches_already_on_the_device_are_passed_through(fashion: IDXDataModule) -> None:
    batch = next(iter(fashion.train_dataloader()))
    same = fashion.transfer_batch_to_device(batch, torch.device("cpu"), 0)
    assert all(a is b for a, b in zip(same, batch, strict=True))
    # Elsewhere, Lightning's own transfer moves them (the meta device stands in for a GPU).
    moved = fashion.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert [t.device.type for t in moved] == ["meta", "meta"]


def test_permutation_depends_only_on_seed_and_epoch(fashion: IDXDataModule) -> None:
    images, labels = fashion.splits["train"]

    def first_labels(seed: int, epoch: int) -> torch.Tensor:
        loader = IndexBatchLoader(
            images, labels, 64, shuffle=True, seed=seed, epoch_fn=lambda: epoch
        )
        return next(iter(loader))[1]

    assert torch.equal(first_labels(0, 3), first_labels(0, 3))
    assert not torch.equal(first_labels(0, 3), first_labels(0, 4))
    assert not torch.equal(first_labels(0, 3), first_labels(1, 3))


def test_epoch_visits_every_sample_once(fashion: IDXDataModule) -> None:
    images, labels = fashion.splits["test"]
    loader = IndexBatchLoader(images, torch.arange(len(labels)), 999, shuffle=True)
    seen = torch.cat([batch[1] for batch in loader])
    assert torch.equal(seen.sort().values, torch.arange(len(labels)))


def test_ranks_get_disjoint_equal_shares(fashion: IDXDataModule) -> None:
    images, _ = fashion.splits["test"]
    ids = torch.arange(len(images))
    shares = [
        torch.cat(
            [b[1] for b in IndexBatchLoader(images, ids, 128, shuffle=True, rank=r, world_size=3)]
        )
        for r in range(3)
    ]
    assert len({len(s) for s in shares}) == 1
    assert len(set(torch.cat(shares).tolist())) == sum(len(s) for s in shares)


@pytest.mark.parametrize("size", [96, 224])
def test_resize_per_batch(size: int) -> None:
    dm = IDXDataModule(
        "fashion_mnist", root=None, image_size=size, eval_batch_size=8, test_subset=8
    )
    dm.setup()
    images, _ = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    assert images.shape == (8, 1, size, size)
    assert torch.isfinite(images).all()


def test_rgb_models_get_three_identical_channels() -> None:
    dm = IDXDataModule("fashion_mnist", root=None, in_channels=3, test_subset=4)
    dm.setup()
    images, _ = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    assert images.shape[1] == 3 and torch.equal(images[:, 0], images[:, 2])


def test_augmentation_is_deterministic_and_changes_images() -> None:
    dm = IDXDataModule("fashion_mnist", root=None, train_subset=512, augment=["hflip", "crop"])
    dm.setup()
    raw = dm.splits["train"][0]
    batch_a = next(iter(dm.train_dataloader()))
    batch_b = next(iter(dm.train_dataloader()))
    assert torch.equal(batch_a[2], batch_b[2])  # same (seed, epoch) -> same draws
    out, _ = dm.on_after_batch_transfer(batch_a, 0)
    plain = IDXDataModule("fashion_mnist", root=None, train_subset=512)
    plain.setup()
    ref, _ = plain.on_after_batch_transfer(next(iter(plain.train_dataloader())), 0)
    assert out.shape == ref.shape and not torch.equal(out, ref)
    assert raw.dtype == torch.uint8


@requires_mnist
def test_mnist_from_the_data_path() -> None:
    dm = IDXDataModule("mnist", root=None, val_size=0)
    dm.setup()
    labels = dm.splits["train"][1]
    assert "val" not in dm.splits and labels.shape == (60_000,)
    assert torch.bincount(labels)[:3].tolist() == [5923, 6742, 5958]  # MNIST's class counts


def test_root_is_searched_first(tmp_path: Path) -> None:
    for stem, n in [("train-images-idx3-ubyte", 60_000), ("t10k-images-idx3-ubyte", 10_000)]:
        write_idx(tmp_path / f"{stem}.gz", torch.full((n, 28, 28), 7, dtype=torch.uint8))
    for stem, n in [("train-labels-idx1-ubyte", 60_000), ("t10k-labels-idx1-ubyte", 10_000)]:
        write_idx(tmp_path / stem, torch.zeros(n, dtype=torch.uint8))
    dm = IDXDataModule("mnist", root=tmp_path, normalize=False, val_size=10)
    dm.setup()
    assert int(dm.splits["test"][0].float().mean()) == 7


def test_missing_dataset_names_the_three_ways(tmp_path: Path, no_mnist: None) -> None:
    dm = IDXDataModule("mnist", root=tmp_path / "data")
    with pytest.raises(DatasetNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "Dataset 'mnist' not found" in message
    assert "(1) put the four IDX files" in message and "(2)" in message and "(3)" in message
    assert "no internet" in message


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"image_size": 0}, "image_size must be a positive integer"),
        ({"augment": ["rotate"]}, "unknown dataset.augment"),
        ({"name": "cifar10"}, "unknown dataset 'cifar10'"),
    ],
)
def test_bad_settings_are_clear(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        IDXDataModule(**kwargs)


def test_missing_dataset_without_a_root_says_how_to_set_one(no_mnist: None) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        locate("mnist", None, download=False)
    message = str(info.value)
    assert "dataset.root=None" not in message
    assert "set dataset.root=<that folder>" in message and "CNNLAB_DATA_PATH" in message
