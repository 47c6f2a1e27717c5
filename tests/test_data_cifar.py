"""CIFAR through the real code path, on miniature archives written in the real format."""

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from benchsuite.data import cifar, download, load_dataset
from benchsuite.errors import BenchError

PER_BATCH = 6


def _batch(name, label, n, rng):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    d = {b"batch_label": label.encode(), b"data": data, b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    if name == "cifar10":
        d[b"labels"] = rng.integers(0, 10, size=n).tolist()
    else:
        d[b"fine_labels"] = rng.integers(0, 100, size=n).tolist()
        d[b"coarse_labels"] = rng.integers(0, 20, size=n).tolist()
    return d


def _meta(name):
    if name == "cifar10":
        return {b"label_names": [f"c10_{i}".encode() for i in range(10)], b"num_cases_per_batch": PER_BATCH}
    return {b"fine_label_names": [f"c100_{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"super_{i}".encode() for i in range(20)]}


@pytest.fixture(autouse=True)
def miniature_md5s(tmp_path, monkeypatch):
    """The miniatures written below stand in for the published files: their md5s fill the table the loader
    checks extracted files against. The note of verified files goes to this test's own cache folder."""
    monkeypatch.setattr(cifar, "FILES_MD5", {name: {} for name in cifar.LAYOUTS})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _publish(path: Path, name: str) -> None:
    cifar.FILES_MD5[name][path.name] = hashlib.md5(path.read_bytes()).hexdigest()


def _write_folder(parent: Path, name: str, seed=0, skip=()) -> dict:
    """The extracted layout (as torchvision leaves it), as published; returns the batches written."""
    layout = cifar.LAYOUTS[name]
    folder = parent / layout.folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    batches = {f: _batch(name, f, PER_BATCH, rng) for f in [*layout.train, layout.test]}
    for f, content in [*batches.items(), (layout.meta, _meta(name))]:
        if f not in skip:
            (folder / f).write_bytes(pickle.dumps(content, protocol=2))
            _publish(folder / f, name)
    return batches


def _archive_bytes(tmp_path: Path, name: str, **kw) -> tuple[bytes, dict]:
    src = tmp_path / "src"
    batches = _write_folder(src, name, **kw)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / cifar.LAYOUTS[name].folder, arcname=cifar.LAYOUTS[name].folder)
    return buf.getvalue(), batches


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    return path


def _place(root, name, data: bytes, monkeypatch, md5: bytes | None = None):
    """Put an archive in root and make the checksum table expect `md5` (default: its own)."""
    (root / cifar.LAYOUTS[name].archive).write_bytes(data)
    monkeypatch.setitem(cifar.ARCHIVE_MD5, name, hashlib.md5(md5 if md5 is not None else data).hexdigest())


def _check(ds, name, batches):
    layout = cifar.LAYOUTS[name]
    key = layout.label_key
    expect_train = np.concatenate([batches[f][b"data"] for f in layout.train])
    assert ds.train_x.shape == (PER_BATCH * len(layout.train), 3, 32, 32)
    assert ds.test_x.shape == (PER_BATCH, 3, 32, 32)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    # Pixel (c, h, w) of an image is byte c*1024 + h*32 + w of its row.
    assert ds.train_x[1, 2, 5, 7] == pytest.approx(expect_train[1, 2 * 1024 + 5 * 32 + 7] / 255)
    assert torch.equal(ds.train_x * 255, torch.from_numpy(expect_train).float().view(-1, 3, 32, 32))
    assert ds.train_y.tolist() == [label for f in layout.train for label in batches[f][key]]
    assert ds.test_y.tolist() == batches[layout.test][key]
    assert ds.num_classes == (10 if name == "cifar10" else 100)
    assert ds.classes[3] == ("c10_3" if name == "cifar10" else "c100_3")
    assert len(ds.mean) == len(ds.std) == 3


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_archive_only_is_verified_and_extracted(name, root, tmp_path, monkeypatch):
    data, batches = _archive_bytes(tmp_path, name)
    _place(root, name, data, monkeypatch)
    ds = cifar.load(name, root)
    _check(ds, name, batches)
    layout = cifar.LAYOUTS[name]
    # Archive kept beside the folder, as torchvision does; no temporary leftovers.
    assert sorted(p.name for p in root.iterdir()) == sorted([layout.archive, layout.folder])
    assert ds.source == str(root / layout.folder)
    assert cifar.locate(name, root) == str(root / layout.folder)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_existing_torchvision_folder_is_reused_without_archive(name, root, monkeypatch):
    batches = _write_folder(root, name, seed=1)
    monkeypatch.setitem(cifar.ARCHIVE_MD5, name, "0" * 32)  # never consulted
    _check(cifar.load(name, root), name, batches)
    ds = load_dataset(name, root)  # through the registry
    assert ds.name == name and ds.source == str(root / cifar.LAYOUTS[name].folder)


def test_missing_names_the_file_its_md5_the_folder_and_the_fetch_command(root):
    with pytest.raises(BenchError) as err:
        cifar.load("cifar10", root)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == (f"cifar10: not found in {root}; place cifar-10-python.tar.gz "
                   f"(md5 c58f30108f718f92721af3b95e74349a) in {root} "
                   f"or run `bench data fetch cifar10 --data-dir {root}`")
    assert cifar.locate("cifar10", root) is None


def test_corrupted_archive_is_rejected_before_extraction(root, tmp_path, monkeypatch):
    data, _ = _archive_bytes(tmp_path, "cifar10")
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    _place(root, "cifar10", bytes(bad), monkeypatch, md5=data)
    with pytest.raises(BenchError, match=r"cifar-10-python.tar.gz is corrupted or truncated \(md5 "):
        cifar.load("cifar10", root)
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]  # the user's file stays, nothing else


def test_truncated_archive_leaves_no_partial_folder(root, tmp_path, monkeypatch):
    data, _ = _archive_bytes(tmp_path, "cifar10")
    # The checksum table agrees with the truncated file, so extraction itself must fail cleanly.
    _place(root, "cifar10", data[: len(data) * 2 // 3], monkeypatch)
    with pytest.raises(BenchError, match="cifar10: cannot extract .*cifar-10-python.tar.gz"):
        cifar.load("cifar10", root)
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]


def test_archive_without_a_batch_is_rejected(root, tmp_path, monkeypatch):
    data, _ = _archive_bytes(tmp_path, "cifar10", skip=("data_batch_3",))
    _place(root, "cifar10", data, monkeypatch)
    with pytest.raises(BenchError, match="lacks cifar-10-batches-py/data_batch_3"):
        cifar.load("cifar10", root)
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]


def test_incomplete_folder_is_not_mixed_with_the_archive(root, tmp_path, monkeypatch):
    data, _ = _archive_bytes(tmp_path, "cifar10")
    _place(root, "cifar10", data, monkeypatch)
    _write_folder(root, "cifar10", skip=("test_batch",))  # e.g. an interrupted torchvision extraction
    with pytest.raises(BenchError, match="cifar-10-batches-py exists but lacks files of cifar-10-python.tar.gz"):
        cifar.load("cifar10", root)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]


def test_malformed_batch_is_a_one_line_error(root):
    _write_folder(root, "cifar10")
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 5), np.uint8),
                                                                            b"labels": [0, 1]}))
    _publish(root / "cifar-10-batches-py" / "test_batch", "cifar10")
    with pytest.raises(BenchError, match="test_batch is not a CIFAR batch"):
        cifar.load("cifar10", root)


class _Planted:
    def __reduce__(self):
        return print, ("this ran",)


def test_a_changed_file_in_an_extracted_folder_is_refused_before_unpickling(root, monkeypatch, capsys):
    batches = _write_folder(root, "cifar10")
    hashed = []
    monkeypatch.setattr(download, "md5sum", _counting(download.md5sum, hashed))
    _check(cifar.load("cifar10", root), "cifar10", batches)
    assert len(hashed) == 7  # every file of the folder, on first use
    _check(cifar.load("cifar10", root), "cifar10", batches)
    assert len(hashed) == 7  # later loads read the note of verified files
    target = root / "cifar-10-batches-py" / "data_batch_2"
    stat = target.stat()
    target.write_bytes(pickle.dumps({b"data": _Planted(), b"labels": [0]}, protocol=2))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # a forged mtime does not hide the change
    with pytest.raises(BenchError) as err:
        cifar.load("cifar10", root)
    assert str(err.value) == (f"cifar10: {target} is not the published file (its md5 differs): it was changed or "
                              f"damaged; delete {target.parent} and run `bench data fetch cifar10 --data-dir {root}`")
    assert "this ran" not in capsys.readouterr().out
    with pytest.raises(BenchError, match="is not the published file"):  # fetch does not call it ready either
        cifar.fetch("cifar10", root)


def test_an_unpickler_for_arrays_only(root):
    """Defence in depth behind the md5s: a CIFAR pickle never names code, so one that does is refused."""
    _write_folder(root, "cifar10")
    target = root / "cifar-10-batches-py" / "test_batch"
    target.write_bytes(pickle.dumps({b"data": _Planted(), b"labels": [0]}, protocol=2))
    _publish(target, "cifar10")
    with pytest.raises(BenchError, match=r"is not a CIFAR pickle \(it refers to __builtin__.print"):
        cifar.load("cifar10", root)


def _counting(fn, calls: list):
    def wrapper(*args):
        calls.append(args)
        return fn(*args)

    return wrapper


class _Response(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def _serve(monkeypatch, data: bytes) -> list[str]:
    urls = []

    def fake_urlopen(url, timeout):
        urls.append(url)
        return _Response(data)

    monkeypatch.setattr(download, "urlopen", fake_urlopen)
    return urls


def test_fetch_downloads_verifies_and_extracts(root, tmp_path, monkeypatch):
    data, batches = _archive_bytes(tmp_path, "cifar100")
    monkeypatch.setitem(cifar.ARCHIVE_MD5, "cifar100", hashlib.md5(data).hexdigest())
    urls = _serve(monkeypatch, data)
    seen = []
    where = cifar.fetch("cifar100", root, progress=lambda done, total: seen.append((done, total)))
    assert urls == ["https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"]
    assert where == str(root / "cifar-100-python")
    assert seen[-1] == (len(data), len(data))
    assert sorted(p.name for p in root.iterdir()) == ["cifar-100-python", "cifar-100-python.tar.gz"]
    _check(cifar.load("cifar100", root), "cifar100", batches)
    assert cifar.fetch("cifar100", root) == where and len(urls) == 1  # already there: no download


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_fetch_of_a_bad_download_keeps_nothing(damage, root, tmp_path, monkeypatch):
    data, _ = _archive_bytes(tmp_path, "cifar10")
    monkeypatch.setitem(cifar.ARCHIVE_MD5, "cifar10", hashlib.md5(data).hexdigest())
    bad = data[:-100] if damage == "truncated" else data[:50] + bytes([data[50] ^ 1]) + data[51:]
    _serve(monkeypatch, bad)
    with pytest.raises(BenchError, match="download of .*cifar-10-python.tar.gz is corrupted or truncated"):
        cifar.fetch("cifar10", root)
    assert list(root.iterdir()) == []


def test_fetch_offline_says_what_to_place(root, monkeypatch):
    def offline(url, timeout):
        raise download.URLError("Name or service not known")

    monkeypatch.setattr(download, "urlopen", offline)
    with pytest.raises(BenchError, match=r"cifar10: cannot download .* \(Name or service not known\); "
                                         r"place cifar-10-python.tar.gz \(md5 c58f3.*\) in "):
        cifar.fetch("cifar10", root)
    assert list(root.iterdir()) == []


def test_cli_fetch_then_list(cli, root, tmp_path, monkeypatch):
    data, _ = _archive_bytes(tmp_path, "cifar10")
    monkeypatch.setitem(cifar.ARCHIVE_MD5, "cifar10", hashlib.md5(data).hexdigest())
    _serve(monkeypatch, data)
    monkeypatch.setenv("COLUMNS", "300")
    before = cli("data", "list", "--data-dir", root)
    assert before.exit_code == 0
    assert "missing: not found in" in before.output and "bench data fetch cifar10" in before.output
    fetched = cli("data", "fetch", "cifar10", "--data-dir", root)
    assert fetched.exit_code == 0, fetched.output
    assert f"cifar10: ready in {root / 'cifar-10-batches-py'}" in fetched.output
    after = cli("data", "list", "--data-dir", root)
    line = next(ln for ln in after.output.splitlines() if ln.startswith("│ cifar10 "))
    assert str(root / "cifar-10-batches-py") in line and "KiB" in line


def test_cli_errors_are_one_line(cli, root, monkeypatch):
    def offline(url, timeout):
        raise download.URLError("offline")

    monkeypatch.setattr(download, "urlopen", offline)
    failed = cli("data", "fetch", "cifar10", "--data-dir", root)
    assert failed.exit_code == 2
    assert failed.stderr.count("\n") == 1 and "cannot download" in failed.stderr
    assert cli("data", "fetch", "imagenet", "--data-dir", root).exit_code == 2
    synthetic = cli("data", "fetch", "synthetic", "--data-dir", root)
    assert synthetic.exit_code == 0 and "synthetic: nothing to download (generated)" in synthetic.output
