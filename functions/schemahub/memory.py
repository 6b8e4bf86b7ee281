"""The process's memory allocator, tuned once by each entry point (the CLI, the Lambda handlers, bench_archive).

An archive day passes through buffers of 2-16 MB: inflated pieces of the file, each slice's text, the transform's
copy of it. glibc's malloc serves blocks of that size from fresh mmaps, or hands freed heap memory back to the
kernel at once, so every buffer is new memory and every 4 KiB page of it a page fault: about 55,000 a day of
1.2M trades, a sixth of that day's CPU time on a VM (bench/bench_archive.py). Keeping freed memory for reuse
cut them to ~16,000 and the path's CPU time by ~10%.

The resident size then stays near its peak instead of shrinking between objects, and the peak itself does not
grow: 24 transforms of 200k-row objects peaked at 266 MB tuned against 264 MB not (578 MB against 571 MB on 4
threads). A run's peak is what it sizes its memory for anyway (a Lambda's memory setting, a laptop's free RAM).
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("schemahub.memory")

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # blocks below this come from the heap, where freed ones are reused (glibc's maximum)
TRIM_THRESHOLD = 1 << 30  # free memory at the heap's top is handed back to the kernel only past this

_tuned: bool | None = None


def tune_allocator() -> bool:
    """Keep freed memory for reuse (glibc's malloc only; anywhere else nothing changes). Whether it applied.

    Idempotent; safe to call from every entry point."""
    global _tuned
    if _tuned is None:
        _tuned = _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        log.debug("allocator tuned: %s", _tuned)
    return _tuned


def _mallopt(param: int, value: int) -> bool:
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc; musl and macOS have none
    except (OSError, AttributeError, TypeError, ValueError):  # Windows: CDLL(None) is a TypeError
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(param, value) == 1
