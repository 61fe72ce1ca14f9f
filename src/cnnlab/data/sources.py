"""Where the IDX files of a dataset come from, in this order:

1. ``dataset.root`` (also ``root/<name>`` and torchvision's ``root/<Class>/raw`` layout);
2. the folders of the environment variable ``CNNLAB_DATA_PATH`` (colon-separated, each searched
   like ``dataset.root``): offline copies a machine keeps outside the checkout;
3. Debian's ``dataset-fashion-mnist`` package, for Fashion-MNIST;
4. torchvision's download into ``dataset.root`` (needs internet).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.data.cache import read_idx_cached
from cnnlab.errors import DatasetNotFoundError

DATA_PATH_ENV = "CNNLAB_DATA_PATH"

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLIT_SIZES = {"train": 60_000, "test": 10_000}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    torchvision_class: str
    classes: tuple[str, ...]
    offline_dirs: tuple[Path, ...]
    install_hint: str


DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        torchvision_class="FashionMNIST",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        offline_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
        install_hint="sudo apt-get install dataset-fashion-mnist  (Debian/Ubuntu; or `make data`)",
    ),
    "mnist": DatasetSpec(
        name="mnist",
        torchvision_class="MNIST",
        classes=tuple(str(d) for d in range(10)),
        offline_dirs=(),
        install_hint=(
            f"put the four IDX files into a folder named in {DATA_PATH_ENV} "
            f"(colon-separated folders, searched after dataset.root)"
        ),
    ),
}


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _has_all_files(folder: Path) -> bool:
    return all(_find_file(folder, stem) for pair in SPLIT_FILES.values() for stem in pair)


def data_path_dirs() -> list[Path]:
    """The folders named in ``CNNLAB_DATA_PATH``."""
    entries = os.environ.get(DATA_PATH_ENV, "").split(os.pathsep)
    return [Path(entry).expanduser() for entry in entries if entry]


def candidate_dirs(spec: DatasetSpec, root: str | Path | None) -> list[Path]:
    bases = ([Path(root).expanduser()] if root else []) + data_path_dirs()
    dirs = [
        folder
        for base in bases
        for folder in (base, base / spec.name, base / spec.torchvision_class / "raw")
    ]
    return dirs + list(spec.offline_dirs)


def locate(name: str, root: str | Path | None, download: bool = True) -> Path:
    """The folder holding the dataset's four IDX files; downloads into ``root`` as a last resort."""
    spec = get_spec(name)
    searched = candidate_dirs(spec, root)
    for folder in searched:
        if _has_all_files(folder):
            return folder
    download_error = "no dataset.root set"
    if download and root:
        try:
            import torchvision.datasets as tvd

            getattr(tvd, spec.torchvision_class)(str(root), train=True, download=True)
            getattr(tvd, spec.torchvision_class)(str(root), train=False, download=True)
            folder = Path(root) / spec.torchvision_class / "raw"
            if _has_all_files(folder):
                return folder
            download_error = f"torchvision downloaded nothing usable into {folder}"
        except Exception as err:  # noqa: BLE001 - any failure here means "no internet" to the user
            download_error = f"{type(err).__name__}: {err}".splitlines()[0][:200]
    offline = f" -> {spec.offline_dirs[0]}" if spec.offline_dirs else ""
    into_root = f"dataset.root={root}" if root else "a folder and set dataset.root=<that folder>"
    raise DatasetNotFoundError(
        f"Dataset '{name}' not found. Looked in: {', '.join(str(d) for d in searched)}; "
        f"the torchvision download failed ({download_error}). Get it one of three ways: "
        f"(1) put the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) into {into_root}; "
        f"(2) {spec.install_hint}{offline}; "
        f"(3) run once with internet access so torchvision downloads it into dataset.root."
    )


@functools.lru_cache(maxsize=4)
def _load_split_cached(folder: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    image_stem, label_stem = SPLIT_FILES[split]
    image_path = _find_file(Path(folder), image_stem)
    label_path = _find_file(Path(folder), label_stem)
    images = read_idx_cached(image_path, expected_ndim=3)
    labels = read_idx_cached(label_path, expected_ndim=1).long()
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{image_path} has {images.shape[0]:,} images but {label_path} has "
            f"{labels.shape[0]:,} labels; the two files belong to different sets"
        )
    if images.shape[0] != SPLIT_SIZES[split] or tuple(images.shape[1:]) != (28, 28):
        raise ValueError(
            f"{image_path}: expected {SPLIT_SIZES[split]:,} images of 28x28 for the {split} "
            f"split, found {tuple(images.shape)}"
        )
    return images, labels


def load_split(name: str, root: str | Path | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N, 28, 28], labels int64 [N]) of one split, validated. Cached per process,
    so a sweep or a test session decompresses each file once."""
    folder = locate(name, root)
    images, labels = _load_split_cached(str(folder), split)
    num_classes = len(get_spec(name).classes)
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(
            f"{name} {split} labels in {folder} fall outside 0..{num_classes - 1}: corrupted file?"
        )
    return images, labels
