"""One contract suite, run against every cache tier; plus each tier's own bounds (TTL, size)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import AsyncIterator

import pytest

from stt_server.cache.tiers import CacheTier, DiskTier, MemoryTier, SqliteTier


class FakeClock:
    """An injected clock: time moves only when a test says so."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


TTL = 100.0


async def make_tier(kind: str, tmp_path: Path, clock: FakeClock) -> CacheTier:
    if kind == "memory":
        return MemoryTier(max_entries=100, ttl_s=TTL, timer=clock)
    if kind == "disk":
        return await DiskTier.open(tmp_path / "l2", size_limit=1 << 30)
    return await SqliteTier.open(tmp_path / "l3.sqlite3", ttl_s=TTL, clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "disk", "sqlite"])
async def tier(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[CacheTier]:
    t = await make_tier(request.param, tmp_path, clock)
    yield t
    await t.close()


VALUE = {"text": "héllo wörld ✓", "segments": [{"start": 0.0, "end": 1.5, "text": "héllo"}], "language": "en"}


async def test_is_a_cache_tier(tier: CacheTier) -> None:
    assert isinstance(tier, CacheTier)


async def test_get_missing_is_none(tier: CacheTier) -> None:
    assert await tier.get("file:nope") is None


async def test_set_then_get_round_trips(tier: CacheTier) -> None:
    await tier.set("file:a", VALUE, engine="local", model="tiny.en")
    assert await tier.get("file:a") == VALUE


async def test_returned_value_is_a_copy(tier: CacheTier) -> None:
    await tier.set("file:a", VALUE, engine="local", model="tiny.en")
    got = await tier.get("file:a")
    assert got is not None
    got["text"] = "mutated"
    assert await tier.get("file:a") == VALUE


async def test_set_overwrites(tier: CacheTier) -> None:
    await tier.set("file:a", {"text": "one"}, engine="local", model="tiny.en")
    await tier.set("file:a", {"text": "two"}, engine="local", model="tiny.en")
    assert await tier.get("file:a") == {"text": "two"}
    assert tier.stats()["entries"] == 1


async def test_delete(tier: CacheTier) -> None:
    await tier.set("file:a", VALUE, engine="local", model="tiny.en")
    assert await tier.delete("file:a") is True
    assert await tier.get("file:a") is None
    assert await tier.delete("file:a") is False


async def fill(tier: CacheTier) -> None:
    for key, engine, model in [("k1", "local", "tiny.en"), ("k2", "local", "tiny.en"),
                               ("k3", "local", "base.en"), ("k4", "openai", "whisper-1")]:
        await tier.set(key, {"k": key}, engine=engine, model=model)


@pytest.mark.parametrize("engine, model, gone", [
    ("local", "tiny.en", {"k1", "k2"}),
    ("local", None, {"k1", "k2", "k3"}),
    (None, "whisper-1", {"k4"}),
    ("local", "large-v3", set()),
    (None, None, {"k1", "k2", "k3", "k4"}),
])
async def test_delete_where(tier: CacheTier, engine: str | None, model: str | None, gone: set[str]) -> None:
    await fill(tier)
    assert await tier.delete_where(engine, model) == len(gone)
    for key in ("k1", "k2", "k3", "k4"):
        assert (await tier.get(key) is None) == (key in gone), key


async def test_clear(tier: CacheTier) -> None:
    await fill(tier)
    assert await tier.clear() == 4
    assert await tier.get("k1") is None
    assert tier.stats()["entries"] == 0


async def test_stats_shape_and_counts(tier: CacheTier) -> None:
    empty = tier.stats()
    assert {"entries", "bytes", "evictions"} <= set(empty)
    assert empty["entries"] == 0
    await fill(tier)
    full = tier.stats()
    assert full["entries"] == 4
    assert full["bytes"] > 0
    assert full["evictions"] == 0


async def test_recent_returns_a_list(tier: CacheTier) -> None:
    await fill(tier)
    recent = await tier.recent(10)
    assert isinstance(recent, list)
    assert all(isinstance(v, dict) for _, v, _, _ in recent)


# -- TTL, with the injected clock -------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_ttl_expiry(kind: str, tmp_path: Path, clock: FakeClock) -> None:
    tier = await make_tier(kind, tmp_path, clock)
    try:
        await tier.set("file:a", VALUE, engine="local", model="tiny.en")
        clock.advance(TTL - 1)
        assert await tier.get("file:a") == VALUE
        clock.advance(2)
        assert await tier.get("file:a") is None
        stats = tier.stats()
        assert stats["entries"] == 0
        assert stats["evictions"] == 1
        await tier.set("file:a", VALUE, engine="local", model="tiny.en")  # a rewrite restarts the TTL
        assert await tier.get("file:a") == VALUE
    finally:
        await tier.close()


async def test_memory_capacity_evicts_least_recently_used(clock: FakeClock) -> None:
    tier = MemoryTier(max_entries=2, ttl_s=TTL, timer=clock)
    await tier.set("a", {"v": 1}, engine="e", model="m")
    await tier.set("b", {"v": 2}, engine="e", model="m")
    await tier.get("a")
    await tier.set("c", {"v": 3}, engine="e", model="m")
    assert await tier.get("b") is None
    assert await tier.get("a") == {"v": 1}
    stats = tier.stats()
    assert (stats["entries"], stats["evictions"]) == (2, 1)
    assert await tier.delete_where("e", "m") == 2  # the evicted key left no trace behind


async def test_sqlite_purge_and_recent_order(tmp_path: Path, clock: FakeClock) -> None:
    tier = await SqliteTier.open(tmp_path / "l3.sqlite3", ttl_s=TTL, clock=clock)
    try:
        for i in range(3):
            await tier.set(f"k{i}", {"i": i}, engine="e", model="m")
            clock.advance(10)
        await tier.get("k0")  # most recently used now
        assert [k for k, *_ in await tier.recent(10)] == ["k0", "k2", "k1"]
        assert [k for k, *_ in await tier.recent(2)] == ["k0", "k2"]
        clock.advance(TTL - 15)  # k0 and k1 were written more than TTL ago
        assert await tier.purge_expired() == 2
        assert [k for k, *_ in await tier.recent(10)] == ["k2"]
    finally:
        await tier.close()


async def test_sqlite_survives_reopen(tmp_path: Path, clock: FakeClock) -> None:
    tier = await SqliteTier.open(tmp_path / "l3.sqlite3", ttl_s=TTL, clock=clock)
    await tier.set("k", VALUE, engine="e", model="m")
    await tier.close()
    again = await SqliteTier.open(tmp_path / "l3.sqlite3", ttl_s=TTL, clock=clock)
    try:
        assert await again.get("k") == VALUE
    finally:
        await again.close()


async def test_sqlite_counters_match_the_table(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "l3.sqlite3"
    tier = await SqliteTier.open(path, ttl_s=TTL, clock=clock)
    try:
        await asyncio.gather(*(tier.set(f"k{i % 7}", {"pad": "x" * i}, engine="e", model=f"m{i % 2}")
                               for i in range(40)), *(tier.delete(f"k{i}") for i in range(3)))
        await tier.delete_where("e", "m1")
        await tier.set("old", {"v": 1}, engine="e", model="m0")
        clock.advance(TTL + 1)
        await tier.set("new", {"v": 2}, engine="e", model="m0")
        await tier.purge_expired()
        with sqlite3.connect(path) as db:
            entries, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM cache_entries").fetchone()
        assert (tier.stats()["entries"], tier.stats()["bytes"]) == (entries, size) == (1, len('{"v":2}'))
    finally:
        await tier.close()
    again = await SqliteTier.open(path, ttl_s=TTL, clock=clock)
    try:
        assert (again.stats()["entries"], again.stats()["bytes"]) == (entries, size)
    finally:
        await again.close()


async def test_disk_size_limit_counts_evictions(tmp_path: Path) -> None:
    tier = await DiskTier.open(tmp_path / "l2", size_limit=1)  # smaller than the empty database
    try:
        for i in range(5):
            await tier.set(f"k{i}", {"pad": "x" * 1000}, engine="e", model="m")
        stats = tier.stats()
        assert stats["evictions"] >= 1
        assert stats["entries"] + stats["evictions"] == 5
    finally:
        await tier.close()


@pytest.mark.parametrize("setup", ["regular_file", "garbage_db"])
async def test_disk_open_fails_loudly_on_bad_directory(tmp_path: Path, setup: str) -> None:
    target = tmp_path / "l2"
    if setup == "regular_file":
        target.write_bytes(b"not a directory")
    else:
        target.mkdir()
        (target / "cache.db").write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(Exception):
        await DiskTier.open(target, size_limit=1 << 20)


async def test_sqlite_open_fails_loudly_on_garbage(tmp_path: Path) -> None:
    path = tmp_path / "l3.sqlite3"
    path.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(Exception):
        await SqliteTier.open(path, ttl_s=TTL)
