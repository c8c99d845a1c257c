"""Keeping the process's resident memory flat while model threads allocate and free large buffers."""

from __future__ import annotations

import ctypes
import ctypes.util

import structlog

log = structlog.get_logger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_KEEP_ALL = 2**31 - 1  # a trim threshold no heap reaches: free memory stays with the process


def tune_malloc(reuse_buffers: bool = False, arenas: int = 2, mmap_threshold: int = 256 * 1024) -> bool:
    """Set glibc's allocator for a process whose model threads allocate and free large buffers.

    By default (``reuse_buffers`` false) per-thread arenas are bounded and large blocks go straight
    to mmap, so the resident size falls back after every call: each inference thread otherwise grows
    its own arena and keeps the peak (with tiny.en on 2 workers the high-water mark drops from about
    370 MB to 305 MB). Every call then faults its buffers in afresh, page by page.

    With ``reuse_buffers``, one arena serves every thread, nothing is mapped apart and free memory is
    kept: a freed buffer is handed to the next call as it is, with no page faults. The encoder's
    attention scores alone are 54 MB a layer; measured with tiny.en on this machine kind, a window
    encodes in 0.30 s instead of 0.45 s, and the process keeps its largest working set (20-60 MB
    more at the peak). Call :func:`release_free_memory` after one-off peaks such as the model load.

    A no-op (False) where the C library is not glibc.
    """
    libc = _libc()
    if libc is None:
        return False
    options = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _KEEP_ALL)) if reuse_buffers else (
        (_M_ARENA_MAX, arenas), (_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, 2 * mmap_threshold))
    try:
        return all(libc.mallopt(option, value) == 1 for option, value in options)
    except AttributeError:
        return False


def release_free_memory() -> bool:
    """Give the memory the allocator holds free back to the system (glibc's malloc_trim); False if not glibc."""
    libc = _libc()
    try:
        return libc is not None and bool(libc.malloc_trim(0))
    except AttributeError:
        return False


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None
