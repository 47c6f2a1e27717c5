"""Download with checksum, atomic archive extraction, and the per-dataset fetch hooks.

Every step writes into a temporary name inside the destination folder and renames it into
place only once it is verified, so an interrupted or corrupted download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from benchsuite.errors import BenchError

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)

_CHUNK = 1 << 20
_FETCHERS: dict[str, Callable[[Path, Progress | None], str]] = {}


def register_fetcher(name: str):
    """Decorator: `fetch(data_dir, progress) -> where the dataset now is`, for `bench data fetch`."""

    def wrap(fn):
        _FETCHERS[name] = fn
        return fn

    return wrap


def fetcher(name: str) -> Callable[[Path, Progress | None], str] | None:
    """The fetch hook of a dataset, or None for datasets that need no files."""
    from benchsuite.data.registry import dataset_info

    dataset_info(name)  # unknown names raise the registry's error
    return _FETCHERS.get(name)


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_md5(path: Path, md5: str, what: str) -> None:
    actual = md5sum(path)
    if actual != md5:
        raise BenchError(f"{what}: {path} is corrupted or truncated (md5 {actual}, expected {md5}); "
                         "delete it and place a good copy")


def _verified_file() -> Path:
    # The user's own cache, not the data folder: whoever can write a shared data folder could forge a note there.
    import platformdirs

    return Path(platformdirs.user_cache_dir("benchsuite")) / "verified.json"


def has_md5(path: Path, md5: str) -> bool:
    """Whether `path` has this md5, hashing it only the first time: the answer is kept under the file's
    identity (device, inode, size, mtime and ctime; ctime moves on any change, even when mtime is forged)."""
    st = path.stat()
    identity = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{md5}"
    note = _verified_file()
    try:
        verified = json.loads(note.read_text())
    except (OSError, ValueError):
        verified = {}
    key = str(path.resolve())
    if verified.get(key) == identity:
        return True
    if md5sum(path) != md5:
        return False
    verified[key] = identity
    try:  # a lost note costs one more hash, nothing else
        note.parent.mkdir(parents=True, exist_ok=True)
        tmp = note.with_name(f"{note.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(verified, sort_keys=True))
        os.replace(tmp, note)
    except OSError:
        pass
    return True


def download(url: str, dest: Path, md5: str, what: str, progress: Progress | None = None) -> Path:
    """Fetch `url` to `dest`, which appears only once its md5 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            try:
                with urlopen(url, timeout=60) as resp:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length else None
                    done = 0
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
            except (URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                raise BenchError(f"{what}: cannot download {url} ({reason}); "
                                 f"place {dest.name} (md5 {md5}) in {dest.parent}") from None
        if h.hexdigest() != md5:
            raise BenchError(f"{what}: download of {url} is corrupted or truncated "
                             f"(md5 {h.hexdigest()}, expected {md5}); nothing was kept, try again")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def extract_tar(archive: Path, root: Path, folder: str, required: list[str], what: str) -> Path:
    """Extract `archive` (whose members live under `folder/`) so that `root/folder` appears whole or not at all."""
    target = root / folder
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".part", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise BenchError(f"{what}: cannot extract {archive} ({e}); delete it and place a good copy") from None
        missing = [name for name in required if not (tmp / folder / name).is_file()]
        if missing:
            raise BenchError(f"{what}: {archive} lacks {folder}/{missing[0]}; delete it and place a good copy")
        try:
            os.rename(tmp / folder, target)
        except OSError:
            # Another process may have extracted it first: keep theirs if it is whole.
            if not all((target / name).is_file() for name in required):
                raise BenchError(f"{what}: {target} exists but lacks files of {archive.name}; "
                                 "delete that folder and retry") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def disk_size(path: Path) -> int:
    """Bytes used by a file, or by every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
