"""The decoded-copy cache of gzipped IDX files, and the histogram pixel statistics."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from cnnlab.data import IDXFormatError, cache, write_idx
from cnnlab.data.transforms import pixel_mean_std


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(directory))
    return directory


@pytest.fixture
def gz_file(tmp_path: Path) -> tuple[Path, torch.Tensor]:
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, images)
    return path, images


def _no_decoding(*args: object, **kwargs: object) -> None:
    raise AssertionError("decoded again although a cached copy exists")


def test_second_read_comes_from_the_cache(
    cache_dir: Path, gz_file: tuple[Path, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, images = gz_file
    assert torch.equal(cache.read_idx_cached(path, expected_ndim=3), images)
    assert len(list(cache_dir.glob("train-images-idx3-ubyte-*.npy"))) == 1
    monkeypatch.setattr(cache, "read_idx", _no_decoding)
    again = cache.read_idx_cached(path, expected_ndim=3)
    assert torch.equal(again, images) and again.dtype == torch.uint8


def test_a_replaced_source_file_is_decoded_again(
    cache_dir: Path, gz_file: tuple[Path, torch.Tensor]
) -> None:
    path, images = gz_file
    cache.read_idx_cached(path)
    replacement = torch.zeros(3, 28, 28, dtype=torch.uint8)
    write_idx(path, replacement)
    assert torch.equal(cache.read_idx_cached(path), replacement)


def test_an_unreadable_copy_is_replaced(
    cache_dir: Path, gz_file: tuple[Path, torch.Tensor]
) -> None:
    path, images = gz_file
    cache.read_idx_cached(path)
    copy = cache.cached_copy(path, cache_dir)
    copy.write_bytes(copy.read_bytes()[:50])  # cut inside the .npy
    assert torch.equal(cache.read_idx_cached(path), images)
    assert torch.equal(cache.read_idx_cached(path), images)  # rewritten whole


def test_a_corrupted_gz_fails_and_is_not_cached(cache_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.idx.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 10)[:-6])
    with pytest.raises(IDXFormatError, match="bad.idx.gz"):
        cache.read_idx_cached(path)
    assert not cache_dir.exists() or not any(cache_dir.iterdir())


def test_empty_variable_switches_the_cache_off(
    gz_file: tuple[Path, torch.Tensor], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, "")
    assert cache.cache_dir() is None
    path, images = gz_file
    assert torch.equal(cache.read_idx_cached(path), images)
    assert not list(tmp_path.rglob("*.npy"))


def test_an_unwritable_cache_only_costs_the_decoding(
    gz_file: tuple[Path, torch.Tensor], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv(cache.CACHE_ENV, str(blocker / "cnnlab"))
    path, images = gz_file
    assert torch.equal(cache.read_idx_cached(path), images)
    assert not list(tmp_path.rglob("*.partial"))


def test_default_location_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "cnnlab"


def test_pixel_mean_std_equals_the_float_computation() -> None:
    images = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8)
    as_float = images.double() / 255.0
    mean, std = pixel_mean_std(images)
    assert mean == pytest.approx(float(as_float.mean()), abs=1e-12)
    assert std == pytest.approx(float(as_float.std()), abs=1e-12)
