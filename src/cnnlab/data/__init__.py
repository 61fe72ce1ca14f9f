"""Fashion-MNIST and MNIST: IDX reading, sources, and the tensor-resident DataModule."""

from cnnlab.data.datamodule import IDXDataModule
from cnnlab.data.idx import IDXFormatError, read_idx, write_idx
from cnnlab.data.sources import DATASETS, DatasetNotFoundError, load_split, locate

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "IDXDataModule",
    "IDXFormatError",
    "load_split",
    "locate",
    "read_idx",
    "write_idx",
]
