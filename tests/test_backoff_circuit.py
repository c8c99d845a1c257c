"""Backoff, Retry-After, the retry policy and the circuit breaker as tables: no sleeping, an injected clock."""

from __future__ import annotations

import os
from email.utils import formatdate
from pathlib import Path

import pytest

from stt_server.engines.backoff import RetryPolicy, backoff_delay, retry_after_seconds, retry_delay
from stt_server.engines.circuit import CircuitBreaker
from stt_server.engines.dispatch import usable_cpus

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "rand", "expected"),
    [
        (0, 0.5, 10.0, 0.0, 0.0),  # full jitter can mean "right away"
        (0, 0.5, 10.0, 0.5, 0.25),
        (1, 0.5, 10.0, 0.5, 0.5),
        (2, 0.5, 10.0, 0.5, 1.0),
        (3, 0.5, 10.0, 0.999, 3.996),
        (5, 0.5, 10.0, 0.5, 5.0),  # 16 s window capped at 10
        (10, 0.5, 10.0, 0.9, 9.0),
        (500, 0.5, 10.0, 0.5, 5.0),  # no float overflow for absurd attempts
        (2, 0.0, 10.0, 0.7, 0.0),
    ],
)
def test_backoff_delay(attempt: int, base: float, cap: float, rand: float, expected: float) -> None:
    assert backoff_delay(attempt, base, cap, rand) == pytest.approx(expected)


@pytest.mark.parametrize(("attempt", "rand"), [(-1, 0.5), (0, 1.0), (0, -0.1)])
def test_backoff_delay_rejects_bad_input(attempt: int, rand: float) -> None:
    with pytest.raises(ValueError):
        backoff_delay(attempt, 0.5, 10.0, rand)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0.25", 0.25),  # non-standard but sent in practice
        ("-3", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW - 30, usegmt=True), 0.0),  # a date in the past means now
        ("Wed, 21 Oct 2015 07:28:00", None),  # no zone: not an HTTP-date
    ],
)
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    got = retry_after_seconds(header, NOW)
    assert got == (None if expected is None else pytest.approx(expected))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# Each step: (action, advance clock by, expected return, expected state after).
STEPS_OPEN_AND_RECOVER = [
    ("failure", 0, None, "closed"),
    ("failure", 0, None, "closed"),
    ("failure", 0, "opened", "open"),
    ("allow", 0, False, "open"),
    ("allow", 9.9, False, "open"),
    ("allow", 0.1, True, "half_open"),  # cool-down over: one probe
    ("allow", 0, False, "half_open"),  # ...and only one
    ("success", 0, "closed", "closed"),
    ("allow", 0, True, "closed"),
]
STEPS_PROBE_FAILS = [
    ("failure", 0, None, "closed"),
    ("success", 0, None, "closed"),  # success resets the consecutive count
    ("failure", 0, None, "closed"),
    ("failure", 0, None, "closed"),
    ("failure", 0, "opened", "open"),
    ("allow", 10, True, "half_open"),
    ("failure", 0, "opened", "open"),  # failed probe re-opens
    ("allow", 5, False, "open"),
    ("allow", 5, True, "half_open"),
    ("release", 0, None, "half_open"),  # a cancelled probe gives its slot back
    ("allow", 0, True, "half_open"),
    ("success", 0, "closed", "closed"),
]
STEPS_LATE_RESULTS = [
    ("failure", 0, None, "closed"),
    ("failure", 0, None, "closed"),
    ("failure", 0, "opened", "open"),
    ("failure", 0, None, "open"),  # a late failure from a request sent earlier: no new event
    ("success", 0, "closed", "closed"),  # a late success proves the upstream is back
]


@pytest.mark.parametrize("steps", [STEPS_OPEN_AND_RECOVER, STEPS_PROBE_FAILS, STEPS_LATE_RESULTS],
                         ids=["open_and_recover", "probe_fails", "late_results"])
def test_circuit_breaker_table(steps: list[tuple[str, float, object, str]]) -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown_s=10.0, clock=clock)
    for i, (action, advance, expected, state) in enumerate(steps):
        clock.now += advance
        if action == "allow":
            available = breaker.available()
            got: object = breaker.allow()
            assert available == got, f"step {i}: available() disagrees with allow()"
        elif action == "release":
            breaker.release()
            got = None
        else:
            got = breaker.record_success() if action == "success" else breaker.record_failure()
        assert got == expected, f"step {i}: {action}"
        assert breaker.state == state, f"step {i}: {action}"


def test_circuit_counts_openings() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown_s=1.0, clock=clock)
    assert breaker.record_failure() == "opened"
    clock.now = 1.0
    assert breaker.allow()
    assert breaker.record_failure() == "opened"
    assert breaker.times_opened == 2


def test_circuit_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold=0, cooldown_s=1.0, clock=Clock())


POLICY = RetryPolicy(attempts=3, base_s=1.0, max_s=8.0)


@pytest.mark.parametrize(
    ("attempt", "retryable", "retry_after", "rand", "expected"),
    [
        (1, True, None, 0.5, 0.5),  # first retry: half of base
        (2, True, None, 0.5, 1.0),  # second: half of 2 x base
        (3, True, None, 0.5, None),  # the last allowed try failed: give up
        (1, False, None, 0.5, None),  # a 400 stays a 400: no retry at all
        (1, True, 3.0, 0.5, 3.0),  # Retry-After longer than the backoff wins
        (1, True, 0.1, 0.5, 0.5),  # shorter: the backoff wins
        (1, True, 8.0, 0.0, 8.0),  # exactly the cap: honoured
        (1, True, 9.0, 0.0, None),  # longer than the cap: give up rather than stall
        (1, False, 1.0, 0.0, None),
    ],
)
def test_retry_delay(attempt: int, retryable: bool, retry_after: float | None, rand: float,
                     expected: float | None) -> None:
    assert retry_delay(POLICY, attempt, retryable, retry_after, rand) == expected


@pytest.mark.parametrize(("cpu_max", "expected_cap"), [("max 100000", None), ("150000 100000", 1),
                                                        ("400000 100000", 4), ("50000 100000", 1), (None, None)])
def test_usable_cpus_honours_a_cgroup_quota(tmp_path: Path, cpu_max: str | None, expected_cap: int | None) -> None:
    if cpu_max is not None:
        (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    affinity = len(os.sched_getaffinity(0))
    expected = affinity if expected_cap is None else min(affinity, expected_cap)
    assert usable_cpus(tmp_path) == expected
