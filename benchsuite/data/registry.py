"""Dataset registry: name -> loader returning every image of the dataset as tensors."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from benchsuite.errors import BenchError


@dataclass
class ImageData:
    """A whole dataset in memory: images as float32 in [0, 1], shape (N, C, H, W)."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""  # where the files were found, for `bench data list`

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


@dataclass
class DatasetInfo:
    name: str
    loader: Callable[[Path], ImageData]
    description: str
    locate: Callable[[Path], str | None] = field(default=lambda root: "built in")


_REGISTRY: dict[str, DatasetInfo] = {}
_CACHE: dict[tuple[str, str], ImageData] = {}


def register_dataset(name: str, description: str = "", locate: Callable[[Path], str | None] | None = None):
    """Decorator: `@register_dataset("digits")` on a function `(data_dir) -> ImageData`.

    `locate(data_dir)` says where the files are (or None when absent) without loading them.
    """

    def wrap(fn: Callable[[Path], ImageData]):
        info = DatasetInfo(name, fn, description or (fn.__doc__ or "").strip().splitlines()[0])
        if locate is not None:
            info.locate = locate
        _REGISTRY[name] = info
        return fn

    return wrap


def list_datasets(pattern: str = "*") -> list[str]:
    _import_builtin()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def dataset_info(name: str) -> DatasetInfo:
    _import_builtin()
    if name not in _REGISTRY:
        raise BenchError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    return _REGISTRY[name]


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """--data-dir, else BENCH_DATA, else the per-user cache folder."""
    if override:
        return Path(override)
    if os.environ.get("BENCH_DATA"):
        return Path(os.environ["BENCH_DATA"])
    import platformdirs

    return Path(platformdirs.user_cache_dir("benchsuite")) / "data"


def load_dataset(name: str, root: str | os.PathLike | None = None) -> ImageData:
    """Load (once per process) every image of a registered dataset."""
    from benchsuite.data.download import fetcher

    info = dataset_info(name)
    path = data_dir(root)
    key = (name, str(path))
    if key not in _CACHE:
        if fetcher(name) is not None and path.exists() and not path.is_dir():
            raise BenchError(f"{name}: the data folder {path} is a file, not a folder; pass --data-dir (or set "
                             "BENCH_DATA to) the folder that holds the datasets")
        try:
            _CACHE[key] = info.loader(path)
        except OSError as exc:  # unreadable files or folders: permissions, a broken mount
            raise BenchError(f"{name}: cannot read {exc.filename or path} ({exc.strerror}); check the permissions "
                             f"of the data folder {path}") from None
    return _CACHE[key]


def _import_builtin() -> None:
    # Importing the modules runs their @register_dataset decorators.
    import benchsuite.data.builtin  # noqa: F401
