import gzip
import hashlib
import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from benchsuite.data import download
from benchsuite.data import fashion_mnist as fm
from benchsuite.errors import BenchError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _small_set(seed=0, n_train=12, n_test=5):
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def _write(folder: Path, arrays: dict, gz: bool):
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(_idx(a)))
        else:
            (folder / name).write_bytes(_idx(a))


@pytest.fixture
def no_system_copy(monkeypatch):
    monkeypatch.setattr(fm, "SYSTEM_DIRS", [])


@pytest.mark.skipif(not DEBIAN.is_dir(), reason=f"{DEBIAN} absent: apt-get install dataset-fashion-mnist")
def test_debian_package_copy(tmp_path):
    ds = fm.load_fashion_mnist(tmp_path)  # nothing in the data dir: falls back to the package's folder
    assert ds.source == str(DEBIAN)
    assert ds.train_x.shape == (60_000, 1, 28, 28) and ds.test_x.shape == (10_000, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and 0 <= ds.train_x.min() and ds.train_x.max() <= 1
    assert ds.num_classes == 10 and ds.classes[9] == "Ankle boot"
    assert torch.bincount(ds.train_y).tolist() == [6000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    assert ds.test_y[:5].tolist() == [9, 2, 1, 1, 6]  # the canonical test set's first labels
    assert 0.2 < ds.mean[0] < 0.4 and 0.3 < ds.std[0] < 0.4


@pytest.mark.parametrize("gz", [True, False])
def test_small_idx_files_in_the_data_dir(tmp_path, gz, monkeypatch):
    arrays = _small_set()
    _write(tmp_path / "fashion-mnist", arrays, gz)
    # The data dir wins over the system folder.
    monkeypatch.setattr(fm, "SYSTEM_DIRS", [DEBIAN])
    ds = fm.load_fashion_mnist(tmp_path)
    assert ds.source == str(tmp_path / "fashion-mnist")
    assert torch.equal(ds.train_x * 255, torch.from_numpy(arrays["train-images-idx3-ubyte"]).float().unsqueeze(1))
    assert ds.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.test_x.shape == (5, 1, 28, 28) and ds.test_y.dtype == torch.int64
    assert fm.locate(tmp_path) == str(tmp_path / "fashion-mnist")


def test_read_idx_any_rank(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx(a))
    assert np.array_equal(fm.read_idx(tmp_path / "a"), a)


def test_truncated_and_foreign_files_are_one_line_errors(tmp_path, no_system_copy):
    arrays = _small_set()
    _write(tmp_path / "fashion-mnist", arrays, gz=False)
    path = tmp_path / "fashion-mnist" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(BenchError, match=r"train-images-idx3-ubyte is truncated \(header says \(12, 28, 28\)"):
        fm.load_fashion_mnist(tmp_path)
    path.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)  # IDX of floats: not Fashion-MNIST
    with pytest.raises(BenchError, match="is not an IDX file of unsigned bytes"):
        fm.load_fashion_mnist(tmp_path)


def test_mismatched_labels_are_rejected(tmp_path, no_system_copy):
    arrays = _small_set()
    arrays["t10k-labels-idx1-ubyte"] = arrays["t10k-labels-idx1-ubyte"][:3]
    _write(tmp_path / "fashion-mnist", arrays, gz=True)
    with pytest.raises(BenchError, match=r"t10k images \(5, 28, 28\) and labels \(3,\) do not match"):
        fm.load_fashion_mnist(tmp_path)


def test_missing_says_what_to_do(tmp_path, no_system_copy):
    assert fm.locate(tmp_path) is None
    with pytest.raises(BenchError) as err:
        fm.load_fashion_mnist(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "fashion-mnist") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "train-images-idx3-ubyte.gz" in msg
    assert f"`bench data fetch fashion_mnist --data-dir {tmp_path}`" in msg


def test_fetch_downloads_the_four_files_with_checksums(tmp_path, no_system_copy, monkeypatch):
    blobs = {f"{name}.gz": gzip.compress(_idx(a)) for name, a in _small_set().items()}
    monkeypatch.setattr(fm, "FILES_MD5", {name: hashlib.md5(b).hexdigest() for name, b in blobs.items()})
    urls = []

    def fake_urlopen(url, timeout):
        urls.append(url)
        resp = io.BytesIO(blobs[url.rsplit("/", 1)[1]])
        resp.headers = {}
        return resp

    monkeypatch.setattr(download, "urlopen", fake_urlopen)
    assert fm.fetch(tmp_path) == str(tmp_path / "fashion-mnist")
    assert sorted(urls) == sorted(fm.URL + name for name in blobs)
    assert sorted(p.name for p in (tmp_path / "fashion-mnist").iterdir()) == sorted(blobs)
    assert fm.load_fashion_mnist(tmp_path).train_x.shape == (12, 1, 28, 28)
    fm.fetch(tmp_path)
    assert len(urls) == 4  # all there: nothing downloaded again


def test_fetch_reuses_the_system_copy(tmp_path, monkeypatch):
    _write(tmp_path / "system", _small_set(), gz=True)
    monkeypatch.setattr(fm, "SYSTEM_DIRS", [tmp_path / "system"])
    monkeypatch.setattr(download, "urlopen", lambda *a, **k: pytest.fail("no download expected"))
    assert fm.fetch(tmp_path / "data") == str(tmp_path / "system")
