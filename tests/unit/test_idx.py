"""The IDX reader: good files (gz and raw) read back exactly; bad files fail naming the file."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from cnnlab.data import IDXFormatError, read_idx, write_idx
from cnnlab.data.sources import DATASETS


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)


@pytest.mark.parametrize("name", ["images.idx", "images.idx.gz"])
def test_roundtrip(tmp_path: Path, images: torch.Tensor, name: str) -> None:
    write_idx(tmp_path / name, images)
    assert torch.equal(read_idx(tmp_path / name, expected_ndim=3), images)


def test_real_fashion_mnist_header() -> None:
    folder = DATASETS["fashion_mnist"].offline_dirs[0]
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz", expected_ndim=1)
    assert labels.shape == (10_000,) and labels.dtype == torch.uint8
    assert torch.bincount(labels.long()).tolist() == [1000] * 10  # balanced test set


def test_truncated_file_names_file_and_sizes(tmp_path: Path, images: torch.Tensor) -> None:
    path = tmp_path / "cut.idx"
    write_idx(path, images)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IDXFormatError, match=r"cut\.idx: truncated.*\(7, 28, 28\)"):
        read_idx(path)


def test_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "notidx.gz"
    path.write_bytes(gzip.compress(b"PK\x03\x04 this is a zip file"))
    with pytest.raises(IDXFormatError, match=r"notidx\.gz: wrong magic number 0x504b0304"):
        read_idx(path)


def test_corrupted_gzip(tmp_path: Path, images: torch.Tensor) -> None:
    path = tmp_path / "broken.idx.gz"
    write_idx(path, images)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(IDXFormatError, match=r"broken\.idx\.gz: the gzip stream is truncated"):
        read_idx(path)


def test_labels_given_for_images(tmp_path: Path, images: torch.Tensor) -> None:
    write_idx(tmp_path / "x.idx", images)
    with pytest.raises(IDXFormatError, match="has 3 dimensions, expected 1"):
        read_idx(tmp_path / "x.idx", expected_ndim=1)
