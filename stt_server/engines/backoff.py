"""Retry timing as pure functions: exponential backoff with full jitter, and Retry-After parsing.

No clock and no randomness inside: the caller passes ``rand`` and ``now`` so that every
case is a row in a parametrized table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


def backoff_delay(attempt: int, base_s: float, max_s: float, rand: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    "Full jitter": a uniform draw from ``[0, min(max_s, base_s * 2**attempt))``, with the
    draw ``rand`` in ``[0, 1)`` injected. Spreading retries over the whole window keeps
    many clients that failed together from retrying together.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if not 0.0 <= rand < 1.0:
        raise ValueError("rand must be in [0, 1)")
    # 2**attempt overflows float for huge attempts; the cap makes anything past it moot.
    ceiling = max_s if attempt >= 64 else min(max_s, base_s * (2.0**attempt))
    return max(0.0, ceiling) * rand


def retry_after_seconds(header: str | None, now: float) -> float | None:
    """Seconds to wait as a ``Retry-After`` header asks, or None if it is absent or unreadable.

    Accepts delta-seconds (``"120"``; also a decimal such as ``"0.5"``, which some servers
    send) or an HTTP-date, compared against ``now`` (Unix seconds). A date in the past
    means "now": 0.0.
    """
    if header is None:
        return None
    value = header.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return _seconds_until_date(value, now)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        return None
    return seconds


def _seconds_until_date(value: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:  # HTTP-dates are always GMT; naive means malformed
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class RetryPolicy:
    """How one chunk is retried: ``attempts`` tries in all, backoff from ``base_s`` up to ``max_s``."""

    attempts: int = 4
    base_s: float = 0.5
    max_s: float = 8.0


def retry_delay(policy: RetryPolicy, attempt: int, retryable: bool, retry_after: float | None,
                rand: float) -> float | None:
    """Seconds to wait before try ``attempt + 1`` after try ``attempt`` (1-based) failed, or None: give up.

    A failure that trying again cannot mend (``retryable`` False) gives up at once, as does the last
    allowed try. A Retry-After the upstream asked for is honoured when it is within ``max_s``
    (the wait is then the longer of it and the backoff); a longer one gives up rather than stall.
    """
    if not retryable or attempt >= policy.attempts:
        return None
    delay = backoff_delay(attempt - 1, policy.base_s, policy.max_s, rand)
    if retry_after is None:
        return delay
    if retry_after > policy.max_s:
        return None
    return max(delay, retry_after)
