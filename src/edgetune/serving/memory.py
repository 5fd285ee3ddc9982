"""Resident memory of this process, for per-model accounting and the memory budget."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from functools import cache

_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """Resident set size of this process now (Linux /proc; 0 where it is not available)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    trim: Callable[[int], int] | None = getattr(ctypes.CDLL(name), "malloc_trim", None)
    return trim  # glibc only


def release_free_memory() -> None:
    """Hand memory freed by an unloaded model back to the OS (glibc keeps it otherwise),
    so the resident size and the next model's measurement reflect what is really in use."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
