"""Keep freed heap memory for reuse during CPU training (glibc only).

A batched training step allocates and frees tensors of a few megabytes dozens of
times. With glibc's default settings those blocks are mapped for each allocation
or trimmed off the heap when freed, so every step faults the same pages back in
(and the kernel zeroes them): on a 2-core machine that costs about a third of a
step. Raising malloc's mmap and trim thresholds keeps the pages in the process for
the next step. The change is process-wide and only affects how much freed memory
the process keeps, never what it computes. It is skipped when the user has set
glibc's own MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_, or
FACEAUDIT_MALLOC_TUNING=0.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 1 << 30  # return freed heap memory to the system only beyond 1 GiB


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap / trim thresholds once per process; True when they are in effect."""
    if os.environ.get("FACEAUDIT_MALLOC_TUNING", "1").lower() in ("0", "false", "no"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
