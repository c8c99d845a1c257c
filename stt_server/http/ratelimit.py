"""Token buckets: a pure step function over a frozen bucket, and a bounded table of them by client.

``take`` does no I/O and reads no clock: the caller passes ``now``, so tests run tables of times.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

Clock = Callable[[], float]


@dataclass(frozen=True)
class Bucket:
    """Tokens left at ``updated_at``; a bucket starts full (``burst`` tokens)."""

    tokens: float
    updated_at: float


def take(bucket: Bucket | None, now: float, *, rate_per_s: float, burst: float,
         cost: float = 1.0) -> tuple[Bucket, float]:
    """Try to spend ``cost`` tokens at ``now``: (the bucket after, seconds to wait; 0 when allowed).

    Tokens refill at ``rate_per_s`` up to ``burst``. A refused take spends nothing. A clock that
    went backwards refills nothing.
    """
    if bucket is None:
        tokens = float(burst)
    else:
        tokens = min(float(burst), bucket.tokens + max(0.0, now - bucket.updated_at) * rate_per_s)
    if tokens >= cost:
        return Bucket(tokens - cost, now), 0.0
    return Bucket(tokens, now), (cost - tokens) / rate_per_s


class RateLimiter:
    """One bucket per client, the least recently seen forgotten past ``max_clients`` (it refills anyway)."""

    def __init__(self, per_minute: float, burst: int, *, clock: Clock = time.monotonic,
                 max_clients: int = 10_000) -> None:
        self.rate_per_s = per_minute / 60.0
        self.burst = max(1, burst)
        self.enabled = per_minute > 0
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def check(self, client: str) -> float:
        """Spend one token of ``client``'s: 0 when allowed, else the seconds until one is there."""
        if not self.enabled:
            return 0.0
        bucket, wait = take(self._buckets.get(client), self._clock(), rate_per_s=self.rate_per_s,
                            burst=self.burst)
        self._buckets[client] = bucket
        self._buckets.move_to_end(client)
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)
