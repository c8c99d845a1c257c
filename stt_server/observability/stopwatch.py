"""Seconds spent in each named part of a piece of work, summed over every thread that does it.

The embedded engine times the parts of its model calls with one (features, encoder, decoder, ...):
``/v1/admin/stats``, ``/metrics`` and ``python -m benchmarks.breakdown`` show where its time goes.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator


class PartTimes:
    """Per part: the seconds spent and how many times it ran. Safe to use from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}
        self._calls: dict[str, int] = {}

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as ``name`` (also when it raises)."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - began)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:  # ``+=`` on a shared dict entry is a read and a write: two threads could lose one
            self._seconds[name] = self._seconds.get(name, 0.0) + seconds
            self._calls[name] = self._calls.get(name, 0) + 1

    def seconds(self) -> dict[str, float]:
        with self._lock:
            return {name: round(s, 3) for name, s in self._seconds.items()}

    def calls(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)
