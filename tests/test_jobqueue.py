"""The job queue: priorities, FIFO within a priority, ageing and fairness, as pure tables."""

from __future__ import annotations

import pytest

from stt_server.errors import TooManyRequests
from stt_server.jobs.jobqueue import JobQueue, QueuedJob, effective_rank, schedule


def _entries(rows: list[tuple[str, str, float, str]]) -> list[QueuedJob]:
    return [QueuedJob(job_id, priority, seq, at, client) for seq, (job_id, priority, at, client) in enumerate(rows)]


@pytest.mark.parametrize(
    ("rows", "now", "ageing_s", "expected"),
    [
        # Priorities, then arrival order.
        ([("a", "low", 0, ""), ("b", "normal", 0, ""), ("c", "high", 0, "")], 0, 600, ["c", "b", "a"]),
        ([("a", "normal", 0, ""), ("b", "normal", 1, ""), ("c", "normal", 2, "")], 3, 600, ["a", "b", "c"]),
        ([("a", "low", 0, ""), ("b", "high", 1, ""), ("c", "low", 2, ""), ("d", "high", 3, "")], 4, 600,
         ["b", "d", "a", "c"]),
        # Ageing: a low job that waited two ageing periods ranks with high, and came first.
        ([("old", "low", 0, ""), ("new", "high", 1190, "")], 1200, 600, ["old", "new"]),
        # One period: low becomes normal, still behind high.
        ([("old", "low", 0, ""), ("new", "high", 1190, ""), ("mid", "normal", 1195, "")], 1200 - 500, 600,
         ["new", "old", "mid"]),
        ([("old", "low", 0, ""), ("mid", "normal", 650, "")], 700, 600, ["old", "mid"]),
        # Ageing off.
        ([("old", "low", 0, ""), ("new", "high", 1190, "")], 10**6, 0, ["new", "old"]),
        # Fairness: a's three jobs do not starve b's one.
        ([("a1", "normal", 0, "a"), ("a2", "normal", 1, "a"), ("a3", "normal", 2, "a"),
          ("b1", "normal", 3, "b")], 4, 600, ["a1", "b1", "a2", "a3"]),
        ([("a1", "normal", 0, "a"), ("a2", "normal", 1, "a"), ("b1", "normal", 2, "b"),
          ("b2", "normal", 3, "b"), ("c1", "normal", 4, "c")], 5, 600, ["a1", "b1", "c1", "a2", "b2"]),
        # Fairness never beats priority.
        ([("a1", "high", 0, "a"), ("a2", "high", 1, "a"), ("b1", "normal", 2, "b")], 3, 600, ["a1", "a2", "b1"]),
    ],
)
def test_schedule(rows, now, ageing_s, expected) -> None:  # type: ignore[no-untyped-def]
    assert [e.job_id for e in schedule(_entries(rows), now, ageing_s)] == expected


@pytest.mark.parametrize(("priority", "waited", "ageing_s", "rank"), [
    ("low", 0, 600, 2), ("low", 599, 600, 2), ("low", 600, 600, 1), ("low", 1200, 600, 0),
    ("low", 10**6, 600, 0), ("high", 10**6, 600, 0), ("normal", 10**6, 0, 1),
])
def test_effective_rank(priority: str, waited: float, ageing_s: float, rank: int) -> None:
    assert effective_rank(QueuedJob("j", priority, 0, 100.0), 100.0 + waited, ageing_s) == rank


async def test_queue_takes_in_schedule_order_with_an_injected_clock() -> None:
    now = [0.0]
    queue = JobQueue(ageing_s=60, clock=lambda: now[0])
    await queue.put("low", "low")
    now[0] = 10
    await queue.put("high", "high")
    assert queue.position("high") == 1 and queue.position("low") == 2
    now[0] = 200  # low has aged past high
    assert queue.position("low") == 1
    assert [await queue.get(), await queue.get()] == ["low", "high"]
    assert queue.position("low") is None and len(queue) == 0


async def test_remove_depth_and_oldest() -> None:
    queue = JobQueue(clock=lambda: 5.0)
    for job_id, priority in (("a", "low"), ("b", "low"), ("c", "high")):
        await queue.put(job_id, priority)
    assert queue.depth_by_priority() == {"high": 1, "normal": 0, "low": 2}
    assert queue.oldest().job_id == "a"  # type: ignore[union-attr]
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


async def test_positions_come_from_one_ordering_of_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    queue = JobQueue(max_queued=2000, clock=lambda: 0.0)
    for n in range(1000):
        await queue.put(f"j{n}", ("high", "normal", "low")[n % 3], client=f"c{n % 7}", enqueued_at=0.0)
    one_by_one = {f"j{n}": queue.position(f"j{n}") for n in range(0, 1000, 97)}
    orderings = 0
    real_order = queue.order

    def counted() -> list[QueuedJob]:
        nonlocal orderings
        orderings += 1
        return real_order()

    monkeypatch.setattr(queue, "order", counted)
    positions = queue.positions()  # what a page of GET /v1/jobs uses for all its rows
    assert orderings == 1 and len(positions) == 1000 and sorted(positions.values()) == list(range(1, 1001))
    assert all(positions[job_id] == place for job_id, place in one_by_one.items())
