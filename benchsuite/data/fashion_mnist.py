"""Fashion-MNIST from its IDX files (gzipped or not).

Looked for in `data_dir/fashion-mnist/`, then in the Debian package's folder
(`apt-get install dataset-fashion-mnist`), else fetched from the project's canonical URLs.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from benchsuite.data.builtin import channel_stats
from benchsuite.data.download import Progress, download, register_fetcher
from benchsuite.data.registry import ImageData, register_dataset
from benchsuite.errors import BenchError

FOLDER = "fashion-mnist"
SYSTEM_DIRS = [Path("/usr/share/datasets/fashion-mnist")]
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# md5 of the upstream .gz files; checked on download only, since Debian recompresses its copies.
FILES_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x0000080N, N dimensions) as an array of that shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise BenchError(f"fashion_mnist: cannot read {path} ({e})") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise BenchError(f"fashion_mnist: {path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else ()
    if len(raw) < header or len(raw) - header != int(np.prod(shape)):
        raise BenchError(f"fashion_mnist: {path} is truncated (header says {shape}, {len(raw)} bytes)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: Path, name: str) -> Path | None:
    """`name.gz` or the decompressed `name`."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _files(folder: Path) -> dict[str, Path] | None:
    found = {gz: _find(folder, gz.removesuffix(".gz")) for gz in FILES_MD5}
    return found if all(found.values()) else None  # type: ignore[return-value]


def locate(root: Path) -> str | None:
    for folder in [root / FOLDER, *SYSTEM_DIRS]:
        if _files(folder):
            return str(folder)
    return None


def _pair(files: dict[str, Path], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(files[f"{split}-images-idx3-ubyte.gz"])
    labels = read_idx(files[f"{split}-labels-idx1-ubyte.gz"])
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise BenchError(f"fashion_mnist: {split} images {images.shape} and labels {labels.shape} do not match")
    if labels.max(initial=0) >= len(CLASSES):
        raise BenchError(f"fashion_mnist: {split} labels go up to {labels.max()}, past the {len(CLASSES)} classes")
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255)
    return x, torch.from_numpy(labels.astype(np.int64))


@register_dataset("fashion_mnist", "Fashion-MNIST: 60,000 + 10,000 greyscale images, 1x28x28, 10 classes",
                  locate=locate)
def load_fashion_mnist(root: Path) -> ImageData:
    where = locate(root)
    if where is None:
        searched = ", ".join(str(d) for d in [root / FOLDER, *SYSTEM_DIRS])
        raise BenchError(f"fashion_mnist: not found in {searched}; "
                         f"`apt-get install dataset-fashion-mnist`, place {', '.join(FILES_MD5)} in "
                         f"{root / FOLDER}, or run `bench data fetch fashion_mnist --data-dir {root}`")
    files = _files(Path(where))
    train_x, train_y = _pair(files, "train")
    test_x, test_y = _pair(files, "t10k")
    mean, std = channel_stats(train_x)
    return ImageData(name="fashion_mnist", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                     classes=list(CLASSES), mean=mean, std=std, source=where)


@register_fetcher("fashion_mnist")
def fetch(root: Path, progress: Progress | None = None) -> str:
    """Download the four files into `root/fashion-mnist` unless some folder already has them all."""
    where = locate(root)
    if where is not None:
        return where
    folder = root / FOLDER
    for gz, md5 in FILES_MD5.items():
        if _find(folder, gz.removesuffix(".gz")) is None:
            download(URL + gz, folder / gz, md5, "fashion_mnist", progress)
    return str(folder)
