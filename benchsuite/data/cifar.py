"""CIFAR-10 and CIFAR-100 from the canonical python archives, in torchvision's folder layout.

`data_dir/cifar-10-batches-py/` (or `cifar-100-python/`) is read as is, so a torchvision download
is reused. With only the `.tar.gz` present it is checked against its md5 and extracted first.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchsuite.data.builtin import channel_stats
from benchsuite.data.download import Progress, check_md5, download, extract_tar, has_md5, md5sum, register_fetcher
from benchsuite.data.registry import ImageData, register_dataset
from benchsuite.errors import BenchError


@dataclass(frozen=True)
class CifarLayout:
    archive: str
    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: bytes
    names_key: bytes

    @property
    def files(self) -> list[str]:
        return [*self.train, self.test, self.meta]


_URL = "https://www.cs.toronto.edu/~kriz/"
LAYOUTS = {
    "cifar10": CifarLayout("cifar-10-python.tar.gz", "cifar-10-batches-py",
                           tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta",
                           b"labels", b"label_names"),
    "cifar100": CifarLayout("cifar-100-python.tar.gz", "cifar-100-python", ("train",), "test", "meta",
                            b"fine_labels", b"fine_label_names"),
}
# Tables rather than constants so tests can check their miniature archives through the same code.
ARCHIVE_MD5 = {"cifar10": "c58f30108f718f92721af3b95e74349a", "cifar100": "eb9058c3a382ffc7106e4002c42a8d85"}
# The published files inside the archives (the md5s torchvision checks): an extracted folder found on disk
# is verified before anything in it is unpickled.
FILES_MD5 = {
    "cifar10": {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
                "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
                "batches.meta": "5ff9c542aee3614f3951f8cda6e48888"},
    "cifar100": {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
                 "meta": "7973b15100ade9c7d40fb424638fde48"},
}


def _complete(folder: Path, layout: CifarLayout) -> bool:
    return all((folder / f).is_file() for f in layout.files)


def locate(name: str, root: Path) -> str | None:
    layout = LAYOUTS[name]
    if _complete(root / layout.folder, layout):
        return str(root / layout.folder)
    if (root / layout.archive).is_file():
        return str(root / layout.archive)
    return None


class _ArraysOnly(pickle.Unpickler):
    """CIFAR batches hold numpy arrays, lists and bytes; any other global (code) is refused."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}  # encode: bytes pickled by Python 3

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR file never does")
        return super().find_class(module, name)


def _unpickle(path: Path, name: str) -> dict:
    try:
        with open(path, "rb") as f:
            return _ArraysOnly(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise BenchError(f"{name}: {path} is not a CIFAR pickle ({e}); delete the folder and retry") from None


def _read_batch(path: Path, layout: CifarLayout, name: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path, name)
    try:
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[layout.label_key], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as e:
        raise BenchError(f"{name}: {path} is not a CIFAR batch (bad or missing {e})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise BenchError(f"{name}: {path} is not a CIFAR batch (data {data.shape}, labels {labels.shape})")
    return data, labels


def _to_tensors(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    # Rows hold the red plane, then green, then blue, each 32x32 row-major: exactly (3, 32, 32).
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float().div_(255)
    return x, torch.from_numpy(labels)


def _missing(name: str, root: Path) -> BenchError:
    archive = LAYOUTS[name].archive
    return BenchError(f"{name}: not found in {root}; place {archive} (md5 {ARCHIVE_MD5[name]}) in {root} "
                      f"or run `bench data fetch {name} --data-dir {root}`")


def _verify(name: str, root: Path) -> None:
    """Every file of the extracted folder is the published one, before anything in it is unpickled."""
    folder = root / LAYOUTS[name].folder
    for f in LAYOUTS[name].files:
        if not has_md5(folder / f, FILES_MD5[name][f]):
            raise BenchError(f"{name}: {folder / f} is not the published file (its md5 differs): it was changed or "
                             f"damaged; delete {folder} and run `bench data fetch {name} --data-dir {root}`")


def load(name: str, root: Path) -> ImageData:
    layout = LAYOUTS[name]
    folder = root / layout.folder
    if not _complete(folder, layout):
        archive = root / layout.archive
        if not archive.is_file():
            raise _missing(name, root)
        check_md5(archive, ARCHIVE_MD5[name], name)
        extract_tar(archive, root, layout.folder, layout.files, name)
    _verify(name, root)
    classes = [c.decode() for c in _unpickle(folder / layout.meta, name)[layout.names_key]]
    train_x, train_y = _to_tensors([_read_batch(folder / f, layout, name) for f in layout.train])
    test_x, test_y = _to_tensors([_read_batch(folder / layout.test, layout, name)])
    for y in (train_y, test_y):
        if len(y) and not 0 <= int(y.min()) <= int(y.max()) < len(classes):
            raise BenchError(f"{name}: labels in {folder} fall outside the {len(classes)} classes of {layout.meta}")
    mean, std = channel_stats(train_x)
    return ImageData(name=name, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                     classes=classes, mean=mean, std=std, source=str(folder))


def fetch(name: str, root: Path, progress: Progress | None = None) -> str:
    """Download (unless a good archive is already there) and extract; returns the folder."""
    layout = LAYOUTS[name]
    folder = root / layout.folder
    if _complete(folder, layout):
        _verify(name, root)
        return str(folder)
    archive = root / layout.archive
    if not archive.is_file() or md5sum(archive) != ARCHIVE_MD5[name]:
        download(_URL + layout.archive, archive, ARCHIVE_MD5[name], name, progress)
    return str(extract_tar(archive, root, layout.folder, layout.files, name))


@register_dataset("cifar10", "CIFAR-10: 50,000 + 10,000 colour images, 3x32x32, 10 classes",
                  locate=lambda root: locate("cifar10", root))
def load_cifar10(root: Path) -> ImageData:
    return load("cifar10", root)


@register_dataset("cifar100", "CIFAR-100: 50,000 + 10,000 colour images, 3x32x32, 100 fine classes",
                  locate=lambda root: locate("cifar100", root))
def load_cifar100(root: Path) -> ImageData:
    return load("cifar100", root)


@register_fetcher("cifar10")
def fetch_cifar10(root: Path, progress: Progress | None = None) -> str:
    return fetch("cifar10", root, progress)


@register_fetcher("cifar100")
def fetch_cifar100(root: Path, progress: Progress | None = None) -> str:
    return fetch("cifar100", root, progress)
