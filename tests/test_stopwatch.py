"""PartTimes: seconds and counts per part, exact under threads."""

from __future__ import annotations

import sys
import threading

import pytest

from stt_server.observability.stopwatch import PartTimes


def test_each_part_sums_its_seconds_and_counts_its_runs_even_when_it_raises() -> None:
    times = PartTimes()
    times.add("encoder", 0.25)
    times.add("encoder", 0.5)
    with pytest.raises(ValueError), times.part("decoder"):
        raise ValueError("a failed call is still time spent")
    assert times.seconds()["encoder"] == 0.75
    assert times.calls() == {"encoder": 2, "decoder": 1}
    assert times.seconds()["decoder"] >= 0


def test_no_update_is_lost_when_threads_add_at_once() -> None:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between any two bytecodes: a lost update shows
    times, start = PartTimes(), threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(5000):
            times.add("decoder", 0.001)

    threads = [threading.Thread(target=work) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert times.calls() == {"decoder": 40000}
    assert times.seconds()["decoder"] == pytest.approx(40.0)
