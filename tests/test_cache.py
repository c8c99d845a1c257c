"""Cache keys (pure, table-driven) and the CacheManager policy over real tiers in tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from structlog.testing import capture_logs

from stt_server.cache.manager import CacheManager, open_cache
from stt_server.cache.keys import CacheKey, chunk_key, file_key, sha256_hex
from stt_server.cache.tiers import DiskTier, MemoryTier, Recent, SqliteTier
from stt_server.settings import CacheSettings


class FakeClock:
    """An injected clock: time moves only when a test says so."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


AUDIO = sha256_hex(b"some audio bytes")
BASE: dict[str, Any] = dict(engine="local", model="tiny.en", language="en", prompt=None, version="1")
SECRET = "the transcript text nobody should see in logs"


def key(n: int = 0, **changes: Any) -> CacheKey:
    return file_key(sha256_hex(str(n).encode()), **{**BASE, **changes})


# -- keys ----------------------------------------------------------------------


@pytest.mark.parametrize("changes", [
    {"engine": "openai"}, {"model": "base.en"}, {"language": "de"}, {"language": None},
    {"prompt": "Names: Ada"}, {"version": "2"},
])
def test_every_part_changes_the_key(changes: dict[str, Any]) -> None:
    assert file_key(AUDIO, **{**BASE, **changes}) != file_key(AUDIO, **BASE)


@pytest.mark.parametrize("a, b", [
    ({"prompt": None}, {"prompt": ""}),
    ({"language": None}, {"language": ""}),
])
def test_empty_means_none(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert file_key(AUDIO, **{**BASE, **a}) == file_key(AUDIO, **{**BASE, **b})


def test_keys_are_pure_and_levelled() -> None:
    f1, f2 = file_key(AUDIO, **BASE), file_key(AUDIO.upper(), **BASE)
    c = chunk_key(AUDIO, **BASE)
    assert f1 == f2
    assert f1.value == f"file:{f1.digest}" and c.value == f"chunk:{c.digest}"
    assert f1.digest != c.digest
    assert (f1.engine, f1.model, len(f1.digest)) == ("local", "tiny.en", 64)


@pytest.mark.parametrize("digest, changes", [("xyz", {}), (AUDIO, {"engine": ""}), (AUDIO, {"model": ""})])
def test_bad_key_parts_are_rejected(digest: str, changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        file_key(digest, **{**BASE, **changes})


# -- the manager over real tiers -------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def tiers(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[MemoryTier, DiskTier, SqliteTier]]:
    l1 = MemoryTier(max_entries=100, ttl_s=3600, timer=clock)
    l2 = await DiskTier.open(tmp_path / "l2", size_limit=1 << 30)
    l3 = await SqliteTier.open(tmp_path / "l3.sqlite3", ttl_s=86400, clock=clock)
    yield l1, l2, l3
    for t in (l1, l2, l3):
        await t.close()


@pytest.fixture
def manager(tiers: tuple[MemoryTier, DiskTier, SqliteTier], clock: FakeClock) -> CacheManager:
    return CacheManager(*tiers, clock=clock, retry_after_s=30)


async def test_hit_in_l3_is_promoted_to_l1_and_l2(manager: CacheManager, tiers: Any) -> None:
    l1, l2, l3 = tiers
    k = key()
    await l3.set(k.value, {"text": "hi"}, engine=k.engine, model=k.model)
    assert await manager.get(k) == {"text": "hi"}
    assert await l1.get(k.value) == {"text": "hi"}
    assert await l2.get(k.value) == {"text": "hi"}
    stats = manager.stats()
    assert [(stats[t]["hits"], stats[t]["misses"]) for t in ("l1", "l2", "l3")] == [(0, 1), (0, 1), (1, 0)]
    assert await manager.get(k) == {"text": "hi"}
    stats = manager.stats()
    assert (stats["l1"]["hits"], stats["l1"]["hit_rate"], stats["l2"]["misses"]) == (1, 0.5, 1)


async def test_set_writes_through_and_miss_is_none(manager: CacheManager, tiers: Any) -> None:
    k = key()
    assert await manager.get(k) is None
    await manager.set(k, {"text": "hi"})
    for tier in tiers:
        assert await tier.get(k.value) == {"text": "hi"}
    stats = manager.stats()
    assert all(stats[t]["entries"] == 1 and stats[t]["bytes"] > 0 for t in ("l1", "l2", "l3"))
    assert set(stats["l1"]) >= {"hits", "misses", "hit_rate", "entries", "bytes", "evictions", "errors"}


async def present(tiers: Any, k: CacheKey) -> list[bool]:
    return [await t.get(k.value) is not None for t in tiers]


async def test_invalidate_by_key_cascades(manager: CacheManager, tiers: Any) -> None:
    a, b = key(1), key(2)
    await manager.set(a, {"t": "a"})
    await manager.set(b, {"t": "b"})
    assert await manager.invalidate(key=a.value) == 1
    assert await present(tiers, a) == [False, False, False]
    assert await present(tiers, b) == [True, True, True]
    assert await manager.invalidate(keys=[b, key(3)]) == 1  # a job's keys
    assert await present(tiers, b) == [False, False, False]


async def test_invalidate_by_engine_and_model_cascades(manager: CacheManager, tiers: Any) -> None:
    tiny, base, other = key(1), key(2, model="base.en"), key(3, engine="openai", model="whisper-1")
    for k in (tiny, base, other):
        await manager.set(k, {"t": k.value})
    assert await manager.invalidate(engine="local", model="tiny.en") == 1
    assert await present(tiers, tiny) == [False, False, False]
    assert await present(tiers, base) == [True, True, True]
    assert await manager.invalidate(engine="local") == 1
    assert await present(tiers, base) == [False, False, False]
    assert await present(tiers, other) == [True, True, True]


async def test_invalidate_everything_cascades(manager: CacheManager, tiers: Any) -> None:
    for n in range(3):
        await manager.set(key(n), {"n": n})
    assert await manager.invalidate(everything=True) == 3
    assert all(s["entries"] == 0 for s in manager.stats().values())
    with pytest.raises(ValueError):
        await manager.invalidate()


async def test_warm_fills_l1_with_most_recent_within_its_bound(tmp_path: Path, clock: FakeClock) -> None:
    l3 = await SqliteTier.open(tmp_path / "l3.sqlite3", ttl_s=86400, clock=clock)
    for n in range(5):
        await l3.set(key(n).value, {"n": n}, engine="local", model="tiny.en")
        clock.advance(1)
    l1 = MemoryTier(max_entries=3, ttl_s=3600, timer=clock)
    manager = CacheManager(l1, None, l3, clock=clock)
    try:
        assert await manager.warm(10) == 3
        assert [await l1.get(key(n).value) is not None for n in range(5)] == [False, False, True, True, True]
        assert l1.stats()["evictions"] == 0
    finally:
        await manager.close()


def settings(**changes: Any) -> CacheSettings:
    return CacheSettings(**{"l1_max_entries": 100, "l1_ttl_s": 3600.0, "l2_size_bytes": 1 << 30,
                            "l3_ttl_s": 86400.0, "warm_entries": 10, **changes})


Opener = Callable[..., Awaitable[CacheManager]]


@pytest.fixture
async def open_at(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Opener]:
    """open_cache over tmp_path; all closed at teardown, even on failure (aiosqlite's thread would hang exit)."""
    made: list[CacheManager] = []

    async def make(**changes: Any) -> CacheManager:
        made.append(await open_cache(tmp_path, settings(**changes), clock=clock, timer=clock))
        return made[-1]

    yield make
    for manager in made:
        await manager.close()


async def test_warm_after_restart_follows_hits_served_above_l3(clock: FakeClock, open_at: Opener) -> None:
    first = await open_at()
    for n in range(5):
        await first.set(key(n), {"n": n})
        clock.advance(1)
    assert await first.get(key(0)) == {"n": 0}  # an L1 hit: L3 never sees it directly
    assert first.stats()["l3"]["hits"] == 0
    await first.close()
    second = await open_at(l1_max_entries=2)
    l1 = second.tier("l1")
    assert l1 is not None
    assert [await l1.get(key(n).value) is not None for n in range(5)] == [True, False, False, False, True]
    await second.close()


async def test_hits_survive_a_restart(tmp_path: Path, open_at: Opener) -> None:
    k = key()
    first = await open_at()
    await first.set(k, {"text": "kept"})
    await first.close()
    assert (tmp_path / "cache.sqlite3").exists() and (tmp_path / "cache-l2").is_dir()

    warmed = await open_at()  # warmed: L1 serves it
    assert await warmed.get(k) == {"text": "kept"}
    assert warmed.stats()["l1"]["hits"] == 1
    await warmed.close()

    cold = await open_at(warm_entries=0)  # not warmed: L2 serves it
    assert await cold.get(k) == {"text": "kept"}
    assert cold.stats()["l2"]["hits"] == 1
    await cold.close()

    l3_only = await open_at(warm_entries=0, l2_size_bytes=0)
    assert await l3_only.get(k) == {"text": "kept"}
    assert set(l3_only.stats()) == {"l1", "l3"}
    assert l3_only.stats()["l3"]["hits"] == 1
    await l3_only.close()


def break_l2(tmp_path: Path, how: str) -> None:
    target = tmp_path / "cache-l2"
    if how == "regular_file":
        target.write_bytes(b"not a directory")
    else:
        target.mkdir()
        (target / "cache.db").write_bytes(b"\x00garbage" * 1000)


@pytest.mark.parametrize("how", ["regular_file", "garbage_db"])
async def test_broken_l2_and_l3_degrade_to_what_works(tmp_path: Path, open_at: Opener, how: str) -> None:
    break_l2(tmp_path, how)
    (tmp_path / "cache.sqlite3").write_bytes(b"\x00garbage" * 1000)
    with capture_logs() as logs:
        manager = await open_at()
        k = key()
        assert await manager.get(k) is None
        await manager.set(k, {"text": SECRET})
        assert await manager.get(k) == {"text": SECRET}
        stats = manager.stats()
    assert stats["l1"]["errors"] == 0 and stats["l1"]["hits"] == 1
    for t in ("l2", "l3"):
        assert (stats[t]["errors"], stats[t]["available"]) == (1, False)  # bypassed while cooling down
    assert {e["tier"] for e in logs if e["event"] == "cache_tier_failed"} == {"l2", "l3"}
    assert all(SECRET not in str(e) for e in logs)
    await manager.close()


async def test_a_tier_that_can_not_open_is_reopened_later(tmp_path: Path, clock: FakeClock, open_at: Opener) -> None:
    break_l2(tmp_path, "regular_file")
    manager = await open_at()
    assert manager.tier("l2") is None
    (tmp_path / "cache-l2").unlink()  # the operator fixes it
    k = key()
    await manager.set(k, {"text": "x"})
    assert manager.tier("l2") is None  # still cooling down
    clock.advance(31)
    await manager.set(k, {"text": "x"})
    l2 = manager.tier("l2")
    assert l2 is not None and await l2.get(k.value) == {"text": "x"}
    assert manager.stats()["l2"]["available"] is True
    await manager.close()


class FlakyTier:
    """A CacheTier that raises on every call while ``broken`` (the Protocol, not a mock)."""

    def __init__(self) -> None:
        self.broken = True
        self.calls = 0
        self.inner = MemoryTier(max_entries=100, ttl_s=3600)

    async def _do(self, op: str, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.broken:
            raise OSError(28, "No space left on device")
        return await getattr(self.inner, op)(*args, **kwargs)

    async def get(self, key: str) -> dict[str, Any] | None:
        return await self._do("get", key)

    async def set(self, key: str, value: dict[str, Any], *, engine: str, model: str) -> None:
        await self._do("set", key, value, engine=engine, model=model)

    async def delete(self, key: str) -> bool:
        return await self._do("delete", key)

    async def delete_where(self, engine: str | None, model: str | None) -> int:
        return await self._do("delete_where", engine, model)

    async def clear(self) -> int:
        return await self._do("clear")

    async def recent(self, limit: int) -> list[Recent]:
        return await self._do("recent", limit)

    def stats(self) -> dict[str, Any]:
        if self.broken:
            raise OSError(28, "No space left on device")
        return self.inner.stats()

    async def close(self) -> None:
        pass


async def test_a_failing_tier_is_bypassed_counted_and_retried(tiers: Any, clock: FakeClock) -> None:
    _, _, l3 = tiers
    flaky = FlakyTier()
    manager = CacheManager(None, flaky, l3, clock=clock, retry_after_s=30)
    k = key()
    await manager.set(k, {"text": "x"})  # fails in L2, lands in L3
    assert await manager.get(k) == {"text": "x"}
    await manager.invalidate(everything=True)
    assert flaky.calls == 1  # bypassed during the cool-down
    stats = manager.stats()
    assert (stats["l2"]["errors"], stats["l2"]["available"], stats["l3"]["entries"]) == (1, False, 0)
    clock.advance(31)
    assert await manager.get(k) is None  # retried, fails again
    assert (flaky.calls, manager.stats()["l2"]["errors"]) == (2, 2)


async def test_invalidation_missed_while_down_is_replayed_on_recovery(tiers: Any, clock: FakeClock) -> None:
    _, _, l3 = tiers
    flaky = FlakyTier()
    flaky.broken = False
    manager = CacheManager(None, flaky, l3, clock=clock, retry_after_s=30)
    k = key()
    await manager.set(k, {"text": "stale"})
    flaky.broken = True
    await manager.get(key(99))  # L2 fails and goes down
    assert await manager.invalidate(key=k) == 1  # reaches L3 only; L2's share is deferred
    flaky.broken = False
    clock.advance(31)
    assert await manager.get(k) is None  # L2 must not resurrect it
    assert await flaky.inner.get(k.value) is None
