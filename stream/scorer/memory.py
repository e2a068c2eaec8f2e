"""Keep the scorer's resident memory from creeping up under traffic of varying shape.

The soak (bench/bench_soak.py, RELIABILITY.md) found the scorer's RSS growing without a
plateau in sight - 1.0 GB to 1.9 GB over 110,000 events - with no growth in Python objects.
The cause is glibc's malloc, not a leak: each micro-batch gives the model tensors of a new
shape (batch size x padded length), and glibc's *dynamic* mmap threshold, raised every time a
large mmapped block is freed, soon serves those multi-megabyte tensors from the heap instead.
Long-lived allocations (oneDNN's primitive cache holds one entry per shape) land between them,
so freed heap memory can never be returned to the kernel, and each new shape grows the heap.
Measured on the model alone with random batch sizes and lengths: 830 MB -> 1,300 MB after 200
batches; with a fixed mmap threshold of 1 MiB it stays at ~880 MB, for ~25 ms of system time
per batch (mmap/munmap and page faults), a few percent of a full batch.

Fixing the threshold (which also turns the dynamic adjustment off) sends every block of 1 MiB
or more - the activations - to mmap, handed back to the kernel when freed. Bucketing tensor
shapes in the model's batching (rounding batch size and padded length up) would bound the
growth too, without the system time; that change to models/inference.py was not made.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameter number, from glibc's malloc.h.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1024 * 1024


def fix_mmap_threshold(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold (call before the model allocates); False where there is no
    glibc (musl, macOS), which leaves the allocator as it is."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
    if applied:
        log.debug("malloc: blocks of %d bytes or more are mmapped", threshold_bytes)
    return applied


def freeze_startup_objects() -> None:
    """Move everything alive now to the garbage collector's permanent generation (call once the
    model is loaded, before the stream starts).

    torch, transformers and the model leave a great many long-lived objects that every full
    collection walked again: a 244 ms pause in the middle of the stream in the latency bench,
    a tail on every batch it hit. Frozen objects are never scanned; what the stream allocates
    later is collected as usual."""
    gc.collect()
    gc.freeze()
