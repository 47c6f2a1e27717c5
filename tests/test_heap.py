"""glibc's heap (benchsuite.heap): freed memory kept for the next batch, in a process and in a scope, and the
heap handed back afterwards. Each case runs in a fresh interpreter (the allocator's settings are per process);
page faults and RSS are the kernel's counters (getrusage, /proc/self/statm)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")

PRELUDE = """
import ctypes, json, os, resource, sys
# Page faults of 4 KiB pages: no transparent huge pages for this process (PR_SET_THP_DISABLE), where the
# kernel would otherwise back large blocks with 2 MiB pages (THP "always") and fault far fewer times.
assert ctypes.CDLL(None).prctl(41, 1, 0, 0, 0) == 0
import torch
import benchsuite.heap as heap
torch.set_num_threads(1)
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
# Four convolutions over a batch of 40 MiB activations: a forward pass frees and reallocates each. By default
# glibc maps blocks that large (beyond its largest threshold, 32 MiB) and unmaps them when freed.
net = torch.nn.Sequential(*[torch.nn.Conv2d(40, 40, 1) for _ in range(4)]).eval()
x = torch.randn(256, 40, 32, 32)
def passes(k):
    before = faults()
    with torch.inference_mode():
        for _ in range(k):
            net(x)
    return faults() - before
def released(floats, count):
    # Bytes the kernel gets back when `count` filled blocks of `floats` float32 are freed together.
    blocks = [torch.ones(floats) for _ in range(count)]
    held = rss()
    del blocks
    return held - rss()
def handed_back():
    # A freed block of 128 MiB: glibc maps blocks that large (beyond its largest threshold) and unmaps them.
    return released(1 << 25, 1) > 100 << 20
out = {}
"""
PASS_PAGES = 4 * (40 << 20) // 4096  # pages of one pass's four activations


def run(code: str, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", PRELUDE + code + "\nprint(json.dumps(out))"], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, check=True)
    return json.loads(proc.stdout)


def test_keep_freed_memory_stops_refaulting_for_good():
    out = run("""
passes(2)
out["default"] = passes(5)
out["default_back"] = handed_back()
assert heap.keep_freed_memory()
passes(2)
out["kept"] = passes(5)
out["kept_back"] = handed_back()
""")
    # (glibc may grow the heap for new layouts of blocks: by an activation or two)
    assert out["default"] > 4 * PASS_PAGES and out["kept"] < PASS_PAGES, out
    assert out["default_back"] and not out["kept_back"], out


def test_a_scope_keeps_freed_memory_then_hands_the_heap_back():
    out = run("""
passes(2)
out["default"] = passes(5)
start = rss()
with heap.freed_memory_kept():
    passes(2)
    out["inside"] = passes(5)
    out["inside_back"] = handed_back()
    out["peak_inside"] = rss() - start
out["after_exit"] = rss() - start
out["after_back"] = handed_back()  # mapping is back
""")
    assert out["default"] > 4 * PASS_PAGES and out["inside"] < PASS_PAGES, out
    assert not out["inside_back"] and out["peak_inside"] > 128 << 20, out
    assert out["after_exit"] < 32 << 20, out  # malloc_trim handed the kept heap back
    assert out["after_back"], out


def test_a_scope_leaves_glibc_at_the_highest_thresholds_its_rule_reaches():
    # mallinfo2().hblks counts mapped blocks: glibc's own rule has not been shown a large block before the
    # scope (it maps from a few MiB here); after it, blocks are mapped from 32 MiB (SETTLED_MMAP_THRESHOLD) on.
    out = run("""
class MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
def mapped(size):
    before = libc.mallinfo2().hblks
    p = libc.malloc(size)
    n = libc.mallinfo2().hblks - before
    libc.free(p)
    return n == 1
with heap.freed_memory_kept():
    out["inside"] = mapped(40 << 20)
out["after"] = [mapped(24 << 20), mapped(40 << 20)]
""")
    assert out == {"inside": False, "after": [False, True]}


def test_nested_scopes_keep_until_the_outermost_ends_and_an_error_ends_one():
    out = run("""
with heap.freed_memory_kept():
    with heap.freed_memory_kept():
        pass
    out["inner_ended"] = handed_back()
out["outer_ended"] = handed_back()
try:
    with heap.freed_memory_kept():
        raise ValueError
except ValueError:
    out["after_error"] = handed_back()
""")
    assert out == {"inner_ended": False, "outer_ended": True, "after_error": True}


def test_the_environment_and_keep_freed_memory_have_the_last_word():
    # The user's glibc settings stand: here, mapping every block of 128 KiB or more (faults on every pass).
    env = run("""
passes(2)
with heap.freed_memory_kept():
    passes(2)
    out["inside"] = passes(3)
""", env={"MALLOC_MMAP_THRESHOLD_": "131072"})
    assert env["inside"] > 2 * PASS_PAGES, env  # every activation of the three passes
    # A process that keeps freed memory for good still does after a scope.
    kept = run("""
heap.keep_freed_memory()
with heap.freed_memory_kept():
    passes(1)
out["after"] = handed_back()
""")
    assert not kept["after"], kept


def test_measuring_does_not_fault_its_batches_in_again():
    """measure_models keeps the heap while it measures: ten batches fault in about one batch's activations
    (the first), where glibc mapping every block faults in all ten."""
    code = """
from benchsuite.measure import measure_models
from benchsuite.models import ProbePoint
points = [ProbePoint(str(i), str(i), 0) for i in range(4)]
batches = [x[:128] for _ in range(10)]
measure_models([net], [points], batches, pcs=False, as_given=True)
before = faults()
measure_models([net], [points], batches, pcs=False, as_given=True)
out["faults"] = faults() - before
"""
    kept = run(code)["faults"]
    mapped = run(code, env={"MALLOC_MMAP_THRESHOLD_": "131072"})["faults"]
    batch_pages = 4 * (20 << 20) // 4096
    assert kept < 3 * batch_pages < 8 * batch_pages < mapped, (kept, mapped)
