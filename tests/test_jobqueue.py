"""The priority queue: high before normal before low, first in first out within a priority."""

from __future__ import annotations

import pytest

from stt_server.errors import TooManyRequests
from stt_server.jobqueue import JobQueue, order_key


@pytest.mark.parametrize(
    ("arrivals", "expected"),
    [
        ([("a", "low"), ("b", "normal"), ("c", "high")], ["c", "b", "a"]),
        ([("a", "normal"), ("b", "normal"), ("c", "normal")], ["a", "b", "c"]),
        ([("a", "low"), ("b", "high"), ("c", "low"), ("d", "high")], ["b", "d", "a", "c"]),
        ([("a", "normal")], ["a"]),
    ],
)
async def test_order(arrivals: list[tuple[str, str]], expected: list[str]) -> None:
    queue = JobQueue()
    for job_id, priority in arrivals:
        await queue.put(job_id, priority)
    assert [queue.position(j) for j in expected] == list(range(1, len(expected) + 1))
    assert [await queue.get() for _ in expected] == expected
    assert len(queue) == 0


def test_order_key_is_pure() -> None:
    assert order_key("high", 10) < order_key("normal", 1) < order_key("low", 0)


async def test_remove_and_depth() -> None:
    queue = JobQueue()
    for job_id, priority in (("a", "low"), ("b", "low"), ("c", "high")):
        await queue.put(job_id, priority)
    assert queue.depth_by_priority() == {"high": 1, "normal": 0, "low": 2}
    assert queue.remove("a") and not queue.remove("a")
    assert queue.position("b") == 2
    assert [await queue.get(), await queue.get()] == ["c", "b"]


async def test_full_queue_is_429() -> None:
    queue = JobQueue(max_queued=1)
    await queue.put("a", "normal")
    with pytest.raises(TooManyRequests) as err:
        await queue.put("b", "normal")
    assert err.value.headers["Retry-After"]
    await queue.put("c", "normal", force=True)
