"""A circuit breaker per upstream: stop sending work to something that keeps failing.

States: ``closed`` (traffic flows), ``open`` (fail fast), ``half_open`` (after the
cool-down one probe request may go; its outcome closes or re-opens the circuit).
The breaker does no I/O and emits nothing: ``record_*`` return the transition, if
any, and the caller turns it into an event. Time comes from the injected ``clock``.
"""

from __future__ import annotations

from typing import Callable, Literal

State = Literal["closed", "open", "half_open"]
Transition = Literal["opened", "closed"]


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; half-opens ``cooldown_s`` later."""

    def __init__(self, threshold: int, cooldown_s: float, clock: Callable[[], float]) -> None:
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_out = False
        self.times_opened = 0

    @property
    def state(self) -> State:
        """The current state; an open circuit reads as half_open once the cool-down is over."""
        if self._state == "open" and self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def available(self) -> bool:
        """Would :meth:`allow` let a request through now? Changes nothing."""
        state = self.state
        return state == "closed" or (state == "half_open" and not self._probe_out)

    def allow(self) -> bool:
        """Take permission to send one request. In half_open only one probe is out at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probe_out:
            self._state = "half_open"
            self._probe_out = True
            return True
        return False

    def release(self) -> None:
        """Give back a permission without an outcome (the request was cancelled)."""
        self._probe_out = False

    def record_success(self) -> Transition | None:
        """A request worked. Returns ``"closed"`` if that closed an open or half-open circuit."""
        self._failures = 0
        self._probe_out = False
        if self._state != "closed":
            self._state = "closed"
            return "closed"
        return None

    def record_failure(self) -> Transition | None:
        """A request failed. Returns ``"opened"`` if that (re-)opened the circuit."""
        self._failures += 1
        self._probe_out = False
        if self._state == "half_open" or (self._state == "closed" and self._failures >= self.threshold):
            self._state = "open"
            self._opened_at = self._clock()
            self.times_opened += 1
            return "opened"
        return None  # still closed below the threshold, or a late failure while already open
