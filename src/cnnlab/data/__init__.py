"""Fashion-MNIST and MNIST: IDX reading, sources, and the tensor-resident DataModule."""

from __future__ import annotations

from typing import Any

from cnnlab.data import cache
from cnnlab.data.idx import read_idx, write_idx
from cnnlab.data.sources import DATASETS, load_split, locate
from cnnlab.errors import DatasetNotFoundError, IDXFormatError

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "IDXDataModule",
    "IDXFormatError",
    "cache",
    "load_split",
    "locate",
    "read_idx",
    "write_idx",
]


def __getattr__(name: str) -> Any:
    # The DataModule needs Lightning (seconds to import); `python -m cnnlab.data`, which `make
    # data` runs before every train/test, only needs the readers.
    if name == "IDXDataModule":
        from cnnlab.data.datamodule import IDXDataModule

        return IDXDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
