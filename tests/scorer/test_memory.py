"""The scorer fixes glibc's mmap threshold before the model allocates (stream/scorer/memory.py)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from stream.scorer.memory import fix_mmap_threshold

glibc = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="mallopt(M_MMAP_THRESHOLD) is glibc's"
)

# Blocks of a new, larger size every few rounds (a new batch shape), each freed after a small
# long-lived allocation (a primitive-cache entry) was made. With glibc's dynamic threshold the
# blocks come from the heap once the first one is freed, and the heap can only grow: ~18 MiB
# here. With the threshold fixed they are mmapped and handed back when freed.
SCRIPT = """
import ctypes
from stream.scorer.memory import fix_mmap_threshold
assert fix_mmap_threshold()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
before = rss_kb()
kept = []
for i in range(60):
    size = (2 + i // 4) * 1024 * 1024
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    kept.append(libc.malloc(4096))
    ctypes.memset(kept[-1], 1, 4096)
    libc.free(block)
print(rss_kb() - before)
"""


@glibc
def test_fixing_the_threshold_is_accepted_by_glibc() -> None:
    assert fix_mmap_threshold() is True


@glibc
def test_freed_blocks_of_new_shapes_go_back_to_the_kernel_once_fixed() -> None:
    # A fresh interpreter, so the threshold is fixed before anything large was allocated.
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    growth_kb = int(out.stdout.strip())
    assert growth_kb < 4 * 1024, f"RSS grew {growth_kb} KiB with every large block freed"
