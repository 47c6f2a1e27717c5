"""glibc's heap: keep the memory torch frees for the next batch instead of faulting it in again.

By default glibc maps each large block afresh and hands freed memory at the top of its heap back to
the kernel, so a forward pass that frees and reallocates its activations faults them in again, page by
page: a tenth to a fifth of the CPU time of a CPU forward pass here. glibc adapts its thresholds to the
blocks it has seen; it has no call that reads them, and none that makes them adapt again once set.
What is kept is the main thread's heap (where torch allocates when called from it): other threads'
heaps still map blocks over 64 MiB and give back a heap that empties.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import threading
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
_KEEP = 1 << 30  # trim threshold while keeping: the heap shrinks only past 1 GiB of free memory at its top
# The highest thresholds glibc's own rule reaches (after freeing a mapped block of just under 32 MiB, on
# 64-bit), and glibc's default count of mapped blocks.
SETTLED_MMAP_THRESHOLD, SETTLED_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 32 << 20, 64 << 20, 65536
_ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TOP_PAD_")
_TUNABLES = ("trim_threshold", "mmap_threshold", "mmap_max", "top_pad")

_lock = threading.Lock()
_depth = 0  # freed_memory_kept scopes open in this process
_for_good = False  # keep_freed_memory has run


@functools.cache
def _glibc():
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return libc


def configured_by_environment() -> bool:
    """Whether the environment sets glibc's heap thresholds (the user's choice stands)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(k in os.environ for k in _ENVIRONMENT) or any(f"glibc.malloc.{t}" in tunables for t in _TUNABLES)


def _keep(libc) -> bool:
    """No mapped blocks, no trimming below 1 GiB: freed memory stays in the heap."""
    return bool(libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, _KEEP))


def keep_freed_memory() -> bool:
    """For the rest of the process, keep freed memory in the heap (no mapped blocks, no trimming): the
    process keeps its peak heap. What `bench run`'s workers do. False where the C library is not glibc."""
    global _for_good
    libc = _glibc()
    if libc is None:
        return False
    with _lock:
        if _for_good:
            return True
        _for_good = _keep(libc)
    return _for_good


@contextmanager
def freed_memory_kept():
    """Keep freed memory in the heap while inside; on leaving, hand it back to the kernel (malloc_trim) and
    leave glibc with the highest thresholds its own rule reaches (SETTLED_*): it can neither report nor adapt
    again the ones it had. Does nothing where the C library is not glibc, where the environment sets the
    thresholds, or after keep_freed_memory. Nested and concurrent scopes share the outermost one."""
    global _depth
    libc, entered = _glibc(), False
    try:
        with _lock:
            if libc is not None and not _for_good and not configured_by_environment():
                if _depth == 0:
                    _keep(libc)
                _depth += 1
                entered = True
        yield
    finally:
        if entered:
            with _lock:
                _depth -= 1
                if _depth == 0 and not _for_good:
                    libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                    libc.mallopt(M_MMAP_THRESHOLD, SETTLED_MMAP_THRESHOLD)
                    libc.mallopt(M_TRIM_THRESHOLD, SETTLED_TRIM_THRESHOLD)
                    libc.malloc_trim(0)
