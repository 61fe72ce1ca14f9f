"""Where the IDX files of a dataset come from, in this order:

1. ``dataset.root`` (also ``root/<name>`` and torchvision's ``root/<Class>/raw`` layout);
2. the folders of the environment variable ``CNNLAB_DATA_PATH`` (colon-separated, each searched
   like ``dataset.root``): offline copies a machine keeps outside the checkout;
3. Debian's ``dataset-fashion-mnist`` package, for Fashion-MNIST;
4. torchvision's download into ``dataset.root`` (needs internet).

A ``dataset.root`` given explicitly (``root_only``) is the only place looked in: the files are
there, or downloaded there, or the run stops with an error naming what is missing. Falling back
to another copy would train on data the user did not ask for.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.data.cache import read_idx_cached
from cnnlab.errors import DatasetNotFoundError, IDXFormatError

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


def _missing_files(folder: Path) -> list[str]:
    return [stem for pair in SPLIT_FILES.values() for stem in pair if not _find_file(folder, stem)]


def _has_all_files(folder: Path) -> bool:
    return not _missing_files(folder)


def _root_dirs(spec: DatasetSpec, base: Path) -> list[Path]:
    """The layouts searched inside one base folder: itself, <name>/, torchvision's <Class>/raw/."""
    return [base, base / spec.name, base / spec.torchvision_class / "raw"]


def check_given_root(name: str, root: str | Path) -> None:
    """For a ``dataset.root`` given explicitly: a DatasetNotFoundError when it does not exist, or
    when it holds some of the four files but not all (in none of its layouts). An existing folder
    without any of them is fine: the files are downloaded into it."""
    spec = get_spec(name)
    base = Path(root).expanduser()
    instead = (
        f"or drop dataset.root to use the usual places ({DATA_PATH_ENV}, "
        f"{', '.join(str(d) for d in spec.offline_dirs) or 'a download into data/'})"
    )
    if not base.is_dir():
        raise DatasetNotFoundError(
            f"dataset.root={root} does not exist (or is not a directory). A dataset.root given "
            f"explicitly is the only place cnnlab reads {name} from: fix the path, create the "
            f"folder to have {name} downloaded into it, {instead}."
        )
    folders = _root_dirs(spec, base)
    if any(_has_all_files(folder) for folder in folders):
        return
    for folder in folders:
        missing = _missing_files(folder)
        if len(missing) < len(SPLIT_FILES) * 2:
            have = len(SPLIT_FILES) * 2 - len(missing)
            raise DatasetNotFoundError(
                f"dataset.root={root}: {folder} holds {have} of the 4 IDX files of {name}; "
                f"missing: {', '.join(f'{m}(.gz)' for m in missing)}. Copy the missing file(s) "
                f"there (a given dataset.root is the only place cnnlab reads {name} from), "
                f"{instead}."
            )


def data_path_dirs() -> list[Path]:
    """The folders named in ``CNNLAB_DATA_PATH``."""
    entries = os.environ.get(DATA_PATH_ENV, "").split(os.pathsep)
    return [Path(entry).expanduser() for entry in entries if entry]


def candidate_dirs(
    spec: DatasetSpec, root: str | Path | None, root_only: bool = False
) -> list[Path]:
    if root_only and root:
        return _root_dirs(spec, Path(root).expanduser())
    bases = ([Path(root).expanduser()] if root else []) + data_path_dirs()
    dirs = [folder for base in bases for folder in _root_dirs(spec, base)]
    return dirs + list(spec.offline_dirs)


def locate(
    name: str, root: str | Path | None, download: bool = True, root_only: bool = False
) -> Path:
    """The folder holding the dataset's four IDX files; downloads into ``root`` as a last resort.
    With ``root_only`` (a root given explicitly) only ``root`` is searched (check_given_root)."""
    spec = get_spec(name)
    if root_only and root:
        check_given_root(name, root)
    searched = candidate_dirs(spec, root, root_only)
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
    if root_only and root:
        raise DatasetNotFoundError(
            f"Dataset '{name}' not found in dataset.root={root}, the only place looked in since "
            f"it was given explicitly (searched: {', '.join(str(d) for d in searched)}); the "
            f"torchvision download into it failed ({download_error}). Put the four IDX files "
            f"(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            f"t10k-labels-idx1-ubyte.gz) there, run once with internet access, or drop "
            f"dataset.root to use {DATA_PATH_ENV} and the other usual places."
        )
    offline = f" -> {spec.offline_dirs[0]}" if spec.offline_dirs else ""
    into_root = f"dataset.root={root}" if root else "a folder and set dataset.root=<that folder>"
    download_note = (
        f"the torchvision download failed ({download_error})"
        if download
        else "no download was tried (only looking)"
    )
    raise DatasetNotFoundError(
        f"Dataset '{name}' not found. Looked in: {', '.join(str(d) for d in searched)}; "
        f"{download_note}. Get it one of three ways: "
        f"(1) put the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) into {into_root}; "
        f"(2) {spec.install_hint}{offline}; "
        f"(3) run once with internet access so torchvision downloads it into dataset.root."
    )


@functools.lru_cache(maxsize=4)
def _load_split_cached(
    folder: str, split: str, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    image_stem, label_stem = SPLIT_FILES[split]
    image_path = _find_file(Path(folder), image_stem)
    label_path = _find_file(Path(folder), label_stem)
    images = read_idx_cached(image_path, expected_ndim=3)
    labels = read_idx_cached(label_path, expected_ndim=1).long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise IDXFormatError(
            f"{label_path}: {bad.numel():,} labels fall outside 0..{num_classes - 1} (e.g. "
            f"{int(bad[0])}); the file is corrupted or belongs to another dataset. Delete it and "
            f"fetch it again (see docs/data.md)."
        )
    if images.shape[0] != labels.shape[0]:
        raise IDXFormatError(
            f"{image_path} has {images.shape[0]:,} images but {label_path} has "
            f"{labels.shape[0]:,} labels; the two files belong to different sets. Replace them "
            f"with the matching pair (see docs/data.md)."
        )
    if images.shape[0] != SPLIT_SIZES[split] or tuple(images.shape[1:]) != (28, 28):
        raise IDXFormatError(
            f"{image_path}: expected {SPLIT_SIZES[split]:,} images of 28x28 for the {split} "
            f"split, found {tuple(images.shape)}; it is not the original file. Replace it (see "
            f"docs/data.md)."
        )
    return images, labels


def load_split(
    name: str, root: str | Path | None, split: str, root_only: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N, 28, 28], labels int64 [N]) of one split, validated (an IDXFormatError
    names a bad file). Cached per process, so a sweep or a test session decompresses each file
    once."""
    folder = locate(name, root, root_only=root_only)
    return _load_split_cached(str(folder), split, len(get_spec(name).classes))
