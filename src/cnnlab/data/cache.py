"""Decoded copies of gzipped IDX files, so a run starts without gunzipping 26 MB (~0.25 s).

A copy is a ``.npy`` file whose name carries a hash of the source's absolute path, size and
modification time: a replaced or re-downloaded file gets a new key, and a corrupted one is never
cached because it fails to decode first. The cache lives in ``$CNNLAB_CACHE_DIR``, else
``$XDG_CACHE_HOME/cnnlab``, else ``~/.cache/cnnlab``; ``CNNLAB_CACHE_DIR=`` (empty) switches it
off. Where it cannot be written the files are simply decoded every time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.idx import read_idx

CACHE_ENV = "CNNLAB_CACHE_DIR"


def cache_dir() -> Path | None:
    """Where decoded copies go, or None when caching is switched off."""
    if CACHE_ENV in os.environ:
        return Path(os.environ[CACHE_ENV]) if os.environ[CACHE_ENV] else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnlab"


def cached_copy(path: Path, directory: Path) -> Path:
    """The cache file of ``path`` as it is now (its path, size and mtime make the key)."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return directory / f"{path.name.removesuffix('.gz')}-{digest}.npy"


def read_idx_cached(path: str | Path, expected_ndim: int | None = None) -> torch.Tensor:
    """``read_idx`` for gzipped files, through the decoded-copy cache; raw files are read as is."""
    path = Path(path)
    directory = cache_dir()
    if directory is None or not path.name.endswith(".gz"):
        return read_idx(path, expected_ndim)
    copy = cached_copy(path, directory)
    try:
        array = np.load(copy)
        if expected_ndim is None or array.ndim == expected_ndim:
            return torch.from_numpy(array)
    except (OSError, ValueError, EOFError):
        pass  # no copy yet, or an unreadable one: decode and (re)write it
    tensor = read_idx(path, expected_ndim)
    _write_atomically(copy, tensor.numpy())
    return tensor


def _write_atomically(target: Path, array: np.ndarray) -> None:
    # Write to a file of this process, then rename: processes of one DDP run may write the same
    # copy at once, and a reader never sees half a file.
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as f:
            np.save(f, array)
        os.replace(partial, target)
    except OSError:  # read-only home, full disk, a file in the way: run without the cache
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
