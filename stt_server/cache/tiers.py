"""Cache tiers behind one small Protocol: L1 memory, L2 diskcache, L3 SQLite.

Values are JSON-serialisable dicts; every tier stores them as JSON text, so a
caller can never mutate a cached value in place. Tiers raise freely: degrading
around a failing tier is the CacheManager's job, not theirs. ``stats()`` is a
cheap in-memory snapshot (no I/O), kept up to date by the writes themselves.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import aiosqlite
import diskcache
from cachetools import TTLCache

Clock = Callable[[], float]
Recent = tuple[str, dict[str, Any], str, str]  # key, value, engine, model


@runtime_checkable
class CacheTier(Protocol):
    """What every tier offers; one contract suite runs against all of them."""

    async def get(self, key: str) -> dict[str, Any] | None: ...
    async def set(self, key: str, value: dict[str, Any], *, engine: str, model: str) -> None: ...
    async def delete(self, key: str) -> bool: ...
    async def delete_where(self, engine: str | None, model: str | None) -> int: ...
    async def clear(self) -> int: ...
    async def recent(self, limit: int) -> list[Recent]: ...
    def stats(self) -> dict[str, Any]: ...
    async def close(self) -> None: ...


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("cached value is not a JSON object")
    return value


def _matches(engine: str, model: str, want_engine: str | None, want_model: str | None) -> bool:
    """``None`` matches anything, so ``(None, None)`` matches every entry."""
    return (want_engine is None or engine == want_engine) and (want_model is None or model == want_model)


class _TrackedTTLCache(TTLCache):  # type: ignore[type-arg]
    """A TTLCache that reports every key it drops by itself (expiry or capacity)."""

    def __init__(self, maxsize: int, ttl: float, timer: Clock, on_evict: Callable[[str], None]) -> None:
        super().__init__(maxsize, ttl, timer=timer)
        self._on_evict = on_evict

    def expire(self, time: float | None = None) -> list[tuple[Any, Any]]:
        expired = list(super().expire(time))
        for key, _ in expired:
            self._on_evict(key)
        return expired

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        self._on_evict(key)
        return key, value


class MemoryTier:
    """L1: in-process TTL cache bounded by entry count; ``timer`` is injectable."""

    name = "memory"

    def __init__(self, *, max_entries: int, ttl_s: float, timer: Clock = time.monotonic) -> None:
        self.capacity = max_entries
        self._meta: dict[str, tuple[str, str, int]] = {}  # key -> engine, model, bytes
        self._evictions = 0
        self._cache = _TrackedTTLCache(max_entries, ttl_s, timer, self._evicted)

    def _evicted(self, key: str) -> None:
        self._meta.pop(key, None)
        self._evictions += 1

    async def get(self, key: str) -> dict[str, Any] | None:
        text = self._cache.get(key)
        return None if text is None else _loads(text)

    async def set(self, key: str, value: dict[str, Any], *, engine: str, model: str) -> None:
        text = _dumps(value)
        self._cache.pop(key, None)
        self._meta.pop(key, None)
        self._cache[key] = text
        self._meta[key] = (engine, model, len(text.encode("utf-8")))

    async def delete(self, key: str) -> bool:
        self._meta.pop(key, None)
        return self._cache.pop(key, None) is not None

    async def delete_where(self, engine: str | None, model: str | None) -> int:
        doomed = [k for k, (e, m, _) in self._meta.items() if _matches(e, m, engine, model)]
        return sum([await self.delete(k) for k in doomed])

    async def clear(self) -> int:
        count = len(self._cache)
        self._cache.clear()
        self._meta.clear()
        return count

    async def recent(self, limit: int) -> list[Recent]:
        return []

    def stats(self) -> dict[str, Any]:
        entries = len(self._cache)  # expires first, which also trims _meta
        return {"entries": entries, "bytes": sum(size for _, _, size in self._meta.values()),
                "evictions": self._evictions, "capacity": self.capacity}

    async def close(self) -> None:
        self._cache.clear()
        self._meta.clear()


class DiskTier:
    """L2: a size-bounded diskcache; each operation is one ``asyncio.to_thread`` hop."""

    name = "disk"

    def __init__(self, cache: diskcache.Cache) -> None:
        self._cache = cache
        self._write_lock = threading.Lock()  # keeps the eviction arithmetic and the snapshot exact
        self._evictions = 0
        self._entries = 0
        self._bytes = 0

    @classmethod
    async def open(cls, directory: Path, *, size_limit: int) -> "DiskTier":
        """Open (creating if needed) the cache directory; raises if unusable or corrupt."""
        def _open() -> DiskTier:
            tier = cls(diskcache.Cache(str(directory), size_limit=size_limit, eviction_policy="least-recently-used"))
            tier._refresh()
            return tier
        return await asyncio.to_thread(_open)

    def _refresh(self) -> None:
        self._entries, self._bytes = len(self._cache), int(self._cache.volume())

    async def _locked(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run one blocking write under the write lock, in one thread hop."""
        def run() -> Any:
            with self._write_lock:
                try:
                    return fn(*args)
                finally:
                    self._refresh()
        return await asyncio.to_thread(run)

    async def get(self, key: str) -> dict[str, Any] | None:
        text = await asyncio.to_thread(self._cache.get, key)
        return None if text is None else _loads(text)

    def _set(self, key: str, text: str, tag: str) -> None:
        before = len(self._cache) + (0 if key in self._cache else 1)
        self._cache.set(key, text, tag=tag)
        # diskcache culls silently on set when over size_limit; count what went.
        self._evictions += max(0, before - len(self._cache))

    async def set(self, key: str, value: dict[str, Any], *, engine: str, model: str) -> None:
        await self._locked(self._set, key, _dumps(value), f"{engine}\x00{model}")

    async def delete(self, key: str) -> bool:
        return bool(await self._locked(self._cache.delete, key))

    def _delete_where(self, engine: str | None, model: str | None) -> int:
        if engine is not None and model is not None:
            return int(self._cache.evict(f"{engine}\x00{model}"))
        count = 0
        for key in list(self._cache.iterkeys()):
            _, tag = self._cache.get(key, tag=True)
            tag_engine, _, tag_model = (tag or "").partition("\x00")
            if tag and _matches(tag_engine, tag_model, engine, model):
                count += bool(self._cache.delete(key))
        return count

    async def delete_where(self, engine: str | None, model: str | None) -> int:
        return int(await self._locked(self._delete_where, engine, model))

    async def clear(self) -> int:
        return int(await self._locked(self._cache.clear))

    async def recent(self, limit: int) -> list[Recent]:
        return []

    def stats(self) -> dict[str, Any]:
        return {"entries": self._entries, "bytes": self._bytes, "evictions": self._evictions}

    async def close(self) -> None:
        await asyncio.to_thread(self._cache.close)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_entries (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, engine TEXT NOT NULL, model TEXT NOT NULL,
    created_at REAL NOT NULL, last_used_at REAL NOT NULL, size_bytes INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS cache_entries_engine_model ON cache_entries (engine, model);
CREATE INDEX IF NOT EXISTS cache_entries_last_used ON cache_entries (last_used_at);
"""


class SqliteTier:
    """L3: durable SQLite (WAL) with its own TTL, counted from when an entry was written.

    Row count and bytes are kept in memory: read once at open, then adjusted by
    every write (each DELETE reports what it removed), under one write lock.
    """

    name = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, *, ttl_s: float, clock: Clock = time.time) -> None:
        self._conn = conn
        self._ttl_s = ttl_s
        self._clock = clock
        self._write = asyncio.Lock()
        self._evictions = 0
        self._entries = 0
        self._bytes = 0

    @classmethod
    async def open(cls, path: Path, *, ttl_s: float, clock: Clock = time.time) -> "SqliteTier":
        """Open (creating if needed) the database, dropping expired rows; raises if unusable or corrupt."""
        await asyncio.to_thread(Path(path).parent.mkdir, parents=True, exist_ok=True)
        conn = await aiosqlite.connect(str(path), isolation_level=None)  # autocommit
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA busy_timeout=5000")
            await conn.executescript(_SCHEMA)
            rows = await conn.execute_fetchall("SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM cache_entries")
        except BaseException:
            await conn.close()
            raise
        tier = cls(conn, ttl_s=ttl_s, clock=clock)
        tier._entries, tier._bytes = (int(n) for n in next(iter(rows)))
        await tier.purge_expired()
        return tier

    def _cutoff(self) -> tuple[float, float]:
        now = self._clock()
        return now, now - self._ttl_s

    async def _remove(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run a ``DELETE ... RETURNING size_bytes``; adjust the counters; return rows removed."""
        async with self._write:
            rows = list(await self._conn.execute_fetchall(sql, params))
        self._entries -= len(rows)
        self._bytes -= sum(int(r[0]) for r in rows)
        return len(rows)

    async def get(self, key: str) -> dict[str, Any] | None:
        now, cutoff = self._cutoff()
        rows = await self._conn.execute_fetchall(
            "UPDATE cache_entries SET last_used_at = ? WHERE key = ? AND created_at > ? RETURNING value",
            (now, key, cutoff))
        if not rows:  # missing or expired: drop an expired row lazily
            self._evictions += await self._remove(
                "DELETE FROM cache_entries WHERE key = ? AND created_at <= ? RETURNING size_bytes", (key, cutoff))
            return None
        try:
            return _loads(next(iter(rows))[0])
        except ValueError:  # a damaged row is a miss, not a failed tier
            await self.delete(key)
            return None

    async def set(self, key: str, value: dict[str, Any], *, engine: str, model: str) -> None:
        text, now = _dumps(value), self._clock()
        size = len(text.encode("utf-8"))
        async with self._write:
            old = list(await self._conn.execute_fetchall(
                "SELECT size_bytes FROM cache_entries WHERE key = ?", (key,)))
            await self._conn.execute_fetchall(
                "INSERT INTO cache_entries (key, value, engine, model, created_at, last_used_at, size_bytes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                " engine = excluded.engine, model = excluded.model, created_at = excluded.created_at,"
                " last_used_at = excluded.last_used_at, size_bytes = excluded.size_bytes",
                (key, text, engine, model, now, now, size))
        self._entries += 0 if old else 1
        self._bytes += size - (int(old[0][0]) if old else 0)

    async def delete(self, key: str) -> bool:
        return await self._remove("DELETE FROM cache_entries WHERE key = ? RETURNING size_bytes", (key,)) > 0

    async def delete_where(self, engine: str | None, model: str | None) -> int:
        return await self._remove(
            "DELETE FROM cache_entries WHERE (? IS NULL OR engine = ?) AND (? IS NULL OR model = ?)"
            " RETURNING size_bytes", (engine, engine, model, model))

    async def clear(self) -> int:
        return await self._remove("DELETE FROM cache_entries RETURNING size_bytes")

    async def purge_expired(self) -> int:
        """Delete every expired row; returns how many went."""
        count = await self._remove(
            "DELETE FROM cache_entries WHERE created_at <= ? RETURNING size_bytes", (self._cutoff()[1],))
        self._evictions += count
        return count

    async def touch(self, keys: list[str]) -> None:
        """Record uses served by faster tiers (oldest first), so ``recent`` stays most-recently-used."""
        now = self._clock()
        await self._conn.executemany("UPDATE cache_entries SET last_used_at = ? WHERE key = ?",
                                     [(now - (len(keys) - i) * 1e-6, k) for i, k in enumerate(keys)])

    async def recent(self, limit: int) -> list[Recent]:
        """Live entries, most recently used first (what warming L1 wants)."""
        rows = await self._conn.execute_fetchall(
            "SELECT key, value, engine, model FROM cache_entries WHERE created_at > ?"
            " ORDER BY last_used_at DESC LIMIT ?", (self._cutoff()[1], max(0, limit)))
        out: list[Recent] = []
        for key, text, engine, model in rows:
            try:
                out.append((key, _loads(text), engine, model))
            except ValueError:
                continue
        return out

    def stats(self) -> dict[str, Any]:
        """Rows stored (expired rows count until a read or ``purge_expired`` drops them)."""
        return {"entries": self._entries, "bytes": self._bytes, "evictions": self._evictions}

    async def close(self) -> None:
        await self._conn.close()
