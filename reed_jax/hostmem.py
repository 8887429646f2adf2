"""Host memory of XLA:CPU steps: freed memory kept for reuse instead of handed back to the OS.

XLA:CPU allocates an execution's temporaries anew at every call (SiT-S/2 + REED at batch 64:
~3 GB at 16x16x4 latents, 13 GB at 32x32x4; `bench/throughput.py --compile_only`). glibc serves
every block over 32 MiB with its own mmap and unmaps it on free, so each step page-faults and
zeroes all of it again: that was 17-25% of the step's CPU time (kernel time; SiT-S/2, 16x16x4,
batch 64, one core: user 6.1-6.3 s + system 1.2-2.1 s per step; with `reuse_freed_memory()` system
time 0.00-0.03 s; one run each, load 5). In the alternated train-step benchmark at 16x16x4 batch
16 it gained nothing (without / with 0.97 [0.96-0.98], `bench/vs_torch.py`), and the price is a
process that keeps its peak memory until it exits, so the trainer applies it only when asked
(`train.cpu_reuse_memory=True`, off by default).
"""
from __future__ import annotations

import ctypes
import ctypes.util

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


def reuse_freed_memory() -> bool:
    """glibc `mallopt`: large blocks from the heap instead of their own mmap (M_MMAP_MAX 0), the heap's
    free top never trimmed (M_TRIM_THRESHOLD -1), new threads on the main arena (M_ARENA_MAX 1), so
    a freed block is reused by the next allocation without page faults. Process-wide, from this call
    on. Returns whether it applied (False off glibc)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1),
                                                                (M_ARENA_MAX, 1)))
