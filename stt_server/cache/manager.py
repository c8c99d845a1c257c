"""The cache policy: read through L1 → L2 → L3, promote hits, write through, invalidate in cascade.

Every tier call goes through one guard. A tier that raises is counted, logged
(never with the value) and bypassed for ``retry_after_s``; invalidations it
missed meanwhile are replayed before it serves again, so it cannot resurrect
an invalidated entry. A tier that could not be opened at all is reopened on
the same schedule. The cache never fails a transcription.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping

import structlog

from stt_server.cache.keys import CacheKey
from stt_server.cache.tiers import CacheTier, Clock, DiskTier, MemoryTier, SqliteTier

log = structlog.get_logger(__name__)

TIER_NAMES = ("l1", "l2", "l3")
MAX_PENDING = 256  # missed invalidations kept per tier before collapsing them into one clear
TOUCH_BATCH = 256  # hits served above L3 before L3's last_used_at is brought up to date

Opener = Callable[[], Awaitable[CacheTier]]
Op = tuple[str, tuple[Any, ...]]  # a tier method name and its positional arguments


@dataclass
class _Slot:
    """One tier position with its counters and failure state."""

    name: str
    tier: CacheTier | None
    opener: Opener | None = None
    hits: int = 0
    misses: int = 0
    errors: int = 0
    down_until: float = float("-inf")
    pending: list[Op] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class CacheManager:
    """The tiers in order [L1, L2, L3], each optional, behind one degrading guard."""

    def __init__(
        self,
        l1: CacheTier | None = None,
        l2: CacheTier | None = None,
        l3: CacheTier | None = None,
        *,
        openers: Mapping[str, Opener] | None = None,
        clock: Clock = time.monotonic,
        retry_after_s: float = 30.0,
    ) -> None:
        given = dict(zip(TIER_NAMES, (l1, l2, l3)))
        openers = dict(openers or {})
        self._slots = [_Slot(name, given[name], openers.get(name))
                       for name in TIER_NAMES if given[name] is not None or name in openers]
        self._clock = clock
        self._retry_after_s = retry_after_s
        self._touched: dict[str, None] = {}  # keys hit above L3, oldest first

    def tier(self, name: str) -> CacheTier | None:
        """The live tier object for ``"l1"``/``"l2"``/``"l3"`` (None if absent or not open)."""
        return next((s.tier for s in self._slots if s.name == name), None)

    async def open(self) -> None:
        """Try now to open every tier that has an opener (failures are logged and retried later)."""
        for slot in self._slots:
            await self._ready(slot)

    # -- the guard -------------------------------------------------------

    async def _ready(self, slot: _Slot) -> CacheTier | None:
        """The tier if usable now: not cooling down, opened, and caught up on invalidations."""
        if self._clock() < slot.down_until:
            return None
        if slot.tier is not None and not slot.pending:
            return slot.tier
        async with slot.lock:
            if slot.tier is None:
                if slot.opener is None:
                    return None
                try:
                    slot.tier = await slot.opener()
                except Exception as exc:
                    self._mark_down(slot, "open", exc)
                    return None
            while slot.pending:
                op, args = slot.pending[0]
                try:
                    await getattr(slot.tier, op)(*args)
                except Exception as exc:
                    await self._fail(slot, f"replay:{op}", exc)
                    return None
                slot.pending.pop(0)
            return slot.tier

    def _mark_down(self, slot: _Slot, op: str, exc: Exception) -> None:
        slot.errors += 1
        slot.down_until = self._clock() + self._retry_after_s
        log.warning("cache_tier_failed", tier=slot.name, op=op, error=f"{type(exc).__name__}: {exc}"[:300],
                    retry_after_s=self._retry_after_s)

    async def _fail(self, slot: _Slot, op: str, exc: Exception) -> None:
        self._mark_down(slot, op, exc)
        if slot.opener is not None and slot.tier is not None:
            # It can be reopened: drop it, so a deleted or repaired file is picked up afresh.
            tier, slot.tier = slot.tier, None
            try:
                await tier.close()
            except Exception:
                pass

    async def _call(self, slot: _Slot, op: str, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """Run one tier method; ``(False, None)`` if the tier is down or raised."""
        tier = await self._ready(slot)
        if tier is None:
            return False, None
        try:
            return True, await getattr(tier, op)(*args, **kwargs)
        except Exception as exc:
            await self._fail(slot, op, exc)
            return False, None

    # -- the policy ------------------------------------------------------

    async def get(self, key: CacheKey) -> dict[str, Any] | None:
        """Read through the tiers; a hit is copied into every faster tier that missed."""
        missed: list[_Slot] = []
        for slot in self._slots:
            ok, value = await self._call(slot, "get", key.value)
            if not ok:
                continue
            if value is None:
                slot.misses += 1
                missed.append(slot)
                continue
            slot.hits += 1
            found: dict[str, Any] = value
            for faster in missed:
                await self._call(faster, "set", key.value, found, engine=key.engine, model=key.model)
            if slot is not self._slots[-1]:
                await self._touch(key.value)
            return found
        return None

    async def _touch(self, key: str) -> None:
        self._touched.pop(key, None)
        self._touched[key] = None
        if len(self._touched) >= TOUCH_BATCH:
            await self.flush_touches()

    async def flush_touches(self) -> None:
        """Tell L3 about hits served by faster tiers, so warming picks the truly recent entries."""
        touched, self._touched = list(self._touched), {}
        last = self._slots[-1] if self._slots else None
        if touched and last is not None and last.name == "l3" and hasattr(last.tier, "touch"):
            await self._call(last, "touch", touched)

    async def set(self, key: CacheKey, value: dict[str, Any]) -> None:
        """Write through every tier (concurrently); a failing tier is skipped."""
        await asyncio.gather(*(self._call(s, "set", key.value, value, engine=key.engine, model=key.model)
                               for s in self._slots))

    async def invalidate(
        self,
        *,
        key: str | CacheKey | None = None,
        keys: Iterable[str | CacheKey] | None = None,
        engine: str | None = None,
        model: str | None = None,
        everything: bool = False,
    ) -> int:
        """Remove entries from every tier: by key, by keys (a job's), by engine and/or model, or all.

        Returns the largest count removed by any one tier (about the number of
        distinct entries). A tier that is down gets the operation replayed later.
        """
        ops: list[Op]
        if everything:
            ops = [("clear", ())]
        elif key is not None or keys is not None:
            wanted = ([key] if key is not None else []) + list(keys or [])
            ops = [("delete", (str(k),)) for k in wanted]
        elif engine is not None or model is not None:
            ops = [("delete_where", (engine, model))]
        else:
            raise ValueError("invalidate needs key, keys, engine/model or everything=True")
        counts = await asyncio.gather(*(self._invalidate_slot(s, ops) for s in self._slots))
        return max(counts, default=0)

    async def _invalidate_slot(self, slot: _Slot, ops: list[Op]) -> int:
        total = 0
        for index, (op, args) in enumerate(ops):
            ok, result = await self._call(slot, op, *args)
            if not ok:
                self._defer(slot, ops[index:])
                break
            total += int(result)
        return total

    def _defer(self, slot: _Slot, ops: list[Op]) -> None:
        if ops and ops[0][0] == "clear":
            slot.pending = [ops[0]]
        elif slot.pending[:1] != [("clear", ())]:
            slot.pending.extend(ops)
        if len(slot.pending) > MAX_PENDING:
            slot.pending = [("clear", ())]

    async def warm(self, limit: int) -> int:
        """Fill L1 from L3's most recently used entries, within L1's capacity; returns how many."""
        first, last = (self._slots[0], self._slots[-1]) if self._slots else (None, None)
        if first is None or last is None or first.name != "l1" or last.name != "l3":
            return 0
        capacity = getattr(first.tier, "capacity", limit)
        ok, rows = await self._call(last, "recent", max(0, min(limit, capacity)))
        if not ok:
            return 0
        warmed = 0
        for key, value, engine, model in reversed(rows):  # oldest first: the most recent ends up freshest
            done, _ = await self._call(first, "set", key, value, engine=engine, model=model)
            warmed += done
        return warmed

    async def purge_expired(self) -> int:
        """Drop expired rows from tiers that keep them (L3); returns how many."""
        total = 0
        for slot in self._slots:
            if hasattr(slot.tier, "purge_expired"):
                ok, count = await self._call(slot, "purge_expired")
                total += count if ok else 0
        return total

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per tier: hits, misses, hit_rate, entries, bytes, evictions, errors, available (no I/O)."""
        out: dict[str, dict[str, Any]] = {}
        now = self._clock()
        for slot in self._slots:
            row: dict[str, Any] = {"entries": 0, "bytes": 0, "evictions": 0}
            if slot.tier is not None:
                try:
                    row.update(slot.tier.stats())
                except Exception as exc:  # a snapshot should never fail; if it does, say so and move on
                    log.warning("cache_tier_stats_failed", tier=slot.name, error=f"{type(exc).__name__}: {exc}")
            looked = slot.hits + slot.misses
            row.update(hits=slot.hits, misses=slot.misses, hit_rate=slot.hits / looked if looked else 0.0,
                       errors=slot.errors, available=slot.tier is not None and now >= slot.down_until)
            out[slot.name] = row
        return out

    async def close(self) -> None:
        """Close every open tier; errors on the way out are logged, not raised."""
        await self.flush_touches()
        for slot in self._slots:
            tier, slot.tier, slot.opener = slot.tier, None, None
            if tier is not None:
                try:
                    await tier.close()
                except Exception as exc:
                    log.warning("cache_tier_close_failed", tier=slot.name, error=f"{type(exc).__name__}: {exc}")


async def open_cache(
    data_dir: Path, settings: Any, *, clock: Clock = time.time, timer: Clock = time.monotonic,
    retry_after_s: float = 30.0,
) -> CacheManager:
    """Build L1/L2/L3 from ``CacheSettings``, open what opens, and warm L1 from L3.

    ``clock`` is the wall clock L3 stores with its entries (they outlive the process); ``timer``
    times what lives only in this process, L1's TTL and a failed tier's retry, and never jumps.

    L2 lives at ``data_dir/"cache-l2"``, L3 at ``data_dir/"cache.sqlite3"``. A
    non-positive bound disables a tier. A tier that fails to open is left out
    (logged, counted) and reopened after ``retry_after_s``.
    """
    data_dir = Path(data_dir)
    openers: dict[str, Opener] = {}
    l1 = None
    if settings.l1_max_entries > 0:
        l1 = MemoryTier(max_entries=settings.l1_max_entries, ttl_s=settings.l1_ttl_s, timer=timer)
    if settings.l2_size_bytes > 0:
        openers["l2"] = lambda: DiskTier.open(data_dir / "cache-l2", size_limit=settings.l2_size_bytes)
    if settings.l3_ttl_s > 0:
        openers["l3"] = lambda: SqliteTier.open(data_dir / "cache.sqlite3", ttl_s=settings.l3_ttl_s, clock=clock)
    manager = CacheManager(l1, openers=openers, clock=timer, retry_after_s=retry_after_s)
    await manager.open()
    if settings.warm_entries > 0:
        await manager.warm(settings.warm_entries)
    return manager
