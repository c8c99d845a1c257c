"""Dispatch: one runner per engine, shared by every job, and the process-wide decode budget.

A runner is the only door to its engine. It owns how much work the engine gets (each target's
concurrency, whichever job the chunk is from), where each request goes (the healthy target with
the fewest requests in flight), the retry policy (:func:`backoff.retry_delay`, one place, so a
chunk is tried at most ``attempts`` times in all) and each target's circuit breaker. Waiting for a
free slot happens here, before a request exists, so it never counts against an upstream.

It also keeps each target's upload format: when an upstream refuses one, the target falls back
(:func:`upload_format.fallback`) for good and the chunk is sent again in the new format; the
refused request is not an attempt, since it says nothing about the chunk or the upstream's health.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, TypeVar

import structlog

from stt_server.engines.backoff import RetryPolicy, retry_delay
from stt_server.engines.circuit import CircuitBreaker
from stt_server.engines.base import ChunkRequest, Engine, Target, Upload
from stt_server.errors import EngineError
from stt_server.audio.media import encode_upload
from stt_server.audio.transcript import Transcript
from stt_server.audio.upload_format import UploadFormat, fallback

log = structlog.get_logger(__name__)

OnEvent = Callable[[str, dict[str, Any]], None]
# What a runner tells the chunk it works for: ("chunk.started" | "chunk.retried", data).
Notify = Callable[[str, dict[str, Any]], Awaitable[None]]
T = TypeVar("T")
CIRCUIT_EVENTS = {"opened": "upstream.circuit_opened", "closed": "upstream.circuit_closed"}


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may really use: its affinity, capped by a cgroup v2 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def targets_of(engine: Engine) -> tuple[Target, ...]:
    """The engine's targets; an engine that lists none is one target of its own concurrency."""
    return tuple(getattr(engine, "targets", ())) or (Target(engine.name, engine.limits.concurrency),)


@dataclass
class _TargetState:
    spec: Target
    breaker: CircuitBreaker | None
    in_flight: int = 0
    picks: int = 0
    retries: int = 0
    not_before: float = 0.0  # the clock time before which a Retry-After asks us not to call
    last_status: str | None = None
    upload: UploadFormat | None = None  # the format it takes now: its spec's, until it refuses that
    format_fallbacks: int = 0

    def __post_init__(self) -> None:
        self.upload = self.spec.upload

    def available(self) -> bool:
        return self.breaker is None or self.breaker.available()

    def stats(self) -> dict[str, Any]:
        breaker = self.breaker
        return {
            "circuit": breaker.state if breaker else "closed",
            "circuit_opened_total": breaker.times_opened if breaker else 0,
            "consecutive_failures": breaker.consecutive_failures if breaker else 0,
            "in_flight": self.in_flight, "concurrency": self.spec.concurrency, "retries_total": self.retries,
            "upload_format": self.upload.spec if self.upload else None,
            "format_fallbacks_total": self.format_fallbacks,
        }


@dataclass
class Runner:
    """Every chunk bound for one engine goes through :meth:`transcribe`."""

    engine: Engine
    default_retry: RetryPolicy
    on_event: OnEvent | None = None
    clock: Callable[[], float] = time.monotonic
    rand: Callable[[], float] = random.random
    _targets: list[_TargetState] = field(init=False)
    _changed: asyncio.Condition = field(init=False, default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        self._targets = [
            _TargetState(t, CircuitBreaker(t.circuit_threshold, t.circuit_cooldown_s, self.clock)
                         if t.circuit_threshold else None)
            for t in targets_of(self.engine)]

    @property
    def policy(self) -> RetryPolicy:
        """The engine's retry policy: its targets' own (the most patient of them), or the default."""
        own = [t.spec.retry for t in self._targets if t.spec.retry is not None]
        return max(own, key=lambda p: p.attempts) if own else self.default_retry

    @property
    def in_flight(self) -> int:
        return sum(t.in_flight for t in self._targets)

    def upload_formats(self) -> tuple[UploadFormat, ...]:
        """The formats the targets take now: what the decode hop encodes each chunk in, once."""
        return tuple(dict.fromkeys(t.upload for t in self._targets if t.upload is not None))

    async def transcribe(self, request: ChunkRequest, notify: Notify | None = None) -> Transcript:
        """The chunk's transcript, retried as the policy allows; EngineError when it gives up."""
        policy, attempt, last = self.policy, 0, None
        uploads = {u.format: u for u in request.uploads}
        while True:
            attempt += 1
            target = await self._acquire(last)
            last = target
            try:  # the slot is ours from here: it goes back whatever happens, a cancel included
                result = await self._attempt(target, request, uploads, notify, attempt)
            finally:
                await self._release(target)
            if isinstance(result, Transcript):
                return result
            if result.refused_format is not None and self._fall_back(target, result.refused_format):
                attempt -= 1  # sent again in another format: the refusal was no attempt at the chunk
                continue
            delay = retry_delay(policy, attempt, result.retryable, result.retry_after, self.rand())
            if delay is None:
                raise self._give_up(result, attempt)
            target.retries += 1
            if result.retry_after is not None:
                target.not_before = self.clock() + result.retry_after
            log.info("chunk_retry", target=target.spec.name, status=result.message, attempt=attempt,
                     delay_s=round(delay, 3))
            if notify is not None:
                await notify("chunk.retried", {"attempt": attempt, "error": result.message})
            await asyncio.sleep(delay)

    async def within_limits(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run one other piece of engine work (a language detection) in one of the engine's slots."""
        target = await self._acquire(None)
        try:
            return await work()
        finally:
            await self._release(target)

    async def _acquire(self, last: _TargetState | None) -> _TargetState:
        """Wait for a target with a free slot; fail at once when every circuit is open."""
        async with self._changed:
            while True:
                live = [t for t in self._targets if t.available()]
                if not live:
                    raise self._unavailable(last)
                now = self.clock()
                free = [t for t in live if t.in_flight < t.spec.concurrency and t.not_before <= now]
                if free:
                    chosen = min(free, key=lambda t: (t is last and len(free) > 1, t.in_flight, t.picks))
                    if chosen.breaker is None or chosen.breaker.allow():
                        chosen.in_flight += 1
                        chosen.picks += 1
                        return chosen
                    continue  # the circuit moved under us: look again
                waits = [t.not_before - now for t in live if t.not_before > now]
                timeout = min(waits) if waits else None
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout)
                except TimeoutError:
                    pass

    async def _release(self, target: _TargetState) -> None:
        target.in_flight -= 1
        # Shielded: a caller cancelled while it waits for the lock (its job was cancelled mid-chunk)
        # must still wake the chunks waiting for this slot, or they would wait for ever beside a free one.
        await asyncio.shield(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _attempt(self, target: _TargetState, request: ChunkRequest, uploads: dict[UploadFormat, Upload],
                       notify: Notify | None, attempt: int) -> Transcript | EngineError:
        """One request to one target, with its circuit bookkeeping (from the moment the chunk is told
        it started: a cancel even then gives the circuit's probe slot back)."""
        try:
            if notify is not None:
                await notify("chunk.started", {"attempt": attempt})
            upload = await self._upload(target, request, uploads)
            result = await self.engine.transcribe(replace(request, target=target.spec.name, upload=upload))
        except EngineError as err:
            target.last_status = err.failure
            self._record(target, failed=err.against_upstream)
            return err
        except BaseException:  # cancelled: no verdict on the target, give a probe slot back
            if target.breaker is not None:
                target.breaker.release()
            raise
        self._record(target, failed=False)
        return result

    @staticmethod
    async def _upload(target: _TargetState, request: ChunkRequest,
                      uploads: dict[UploadFormat, Upload]) -> Upload | None:
        """The chunk in the target's format: encoded by the decode hop, or now (after a fallback), once."""
        fmt = target.upload
        if fmt is None:
            return None
        if fmt not in uploads:
            uploads[fmt] = Upload(fmt, await asyncio.to_thread(encode_upload, request.samples, fmt))
        return uploads[fmt]

    def _fall_back(self, target: _TargetState, refused: str) -> bool:
        """Move ``target`` off the format it refused; False when there is nothing left to try.

        Chunks in flight together are all refused in the old format: only the first refusal moves
        the target on, the others are just sent again in its new format."""
        current = target.upload
        if current is None:
            return False
        if current.spec != refused:
            return True
        nxt = fallback(current)
        if nxt is None:
            return False
        target.upload = nxt
        target.format_fallbacks += 1
        self._emit("upstream.format_fallback", {"upstream": target.spec.name, "engine": self.engine.name,
                                                "refused": refused, "now": nxt.spec,
                                                "last_status": target.last_status})
        return True

    def _record(self, target: _TargetState, *, failed: bool) -> None:
        breaker = target.breaker
        if breaker is None:
            return
        transition = breaker.record_failure() if failed else breaker.record_success()
        if transition is not None:
            self._emit(CIRCUIT_EVENTS[transition], {
                "upstream": target.spec.name, "engine": self.engine.name, "last_status": target.last_status,
                "consecutive_failures": breaker.consecutive_failures, "cooldown_s": breaker.cooldown_s})

    def _give_up(self, err: EngineError, attempts: int) -> EngineError:
        detail = f": {err.detail}" if err.detail else ""
        wait = (f"; asked to retry after {err.retry_after:.1f} s"
                if err.retry_after is not None and err.retryable and attempts < self.policy.attempts else "")
        log.warning("chunk_gave_up", engine=self.engine.name, error=err.message, attempts=attempts)
        return EngineError(f"{err.message} after {attempts} attempt(s){detail}{wait}", retryable=False)

    def _unavailable(self, last: _TargetState | None) -> EngineError:
        names = ", ".join(t.spec.name for t in self._targets)
        status = (last or self._targets[0]).last_status or "none"
        return EngineError(f"upstream {names} unavailable: circuit open; last status {status}", retryable=False)

    def _emit(self, name: str, data: dict[str, Any]) -> None:
        log.warning(name.replace(".", "_"), **data)
        if self.on_event is not None:
            try:
                self.on_event(name, data)
            except Exception:  # noqa: BLE001 - an observer must not fail a transcription
                log.exception("on_event_failed", event=name)

    def stats(self) -> dict[str, Any]:
        """The engine's own figures, with each target's dispatch figures beside its I/O figures."""
        stats = dict(self.engine.stats())
        stats["in_flight"] = self.in_flight
        upstreams = stats.get("upstreams")
        if isinstance(upstreams, dict):
            stats["upstreams"] = {name: {**figures, **self._target(name).stats()}
                                  for name, figures in upstreams.items()}
        return stats

    def _target(self, name: str) -> _TargetState:
        return next(t for t in self._targets if t.spec.name == name)


class Dispatch:
    """The runners, one per engine, and the decode slots every job shares."""

    def __init__(self, engines: Mapping[str, Engine], default_retry: RetryPolicy, *,
                 decoders: int | None = None, on_event: OnEvent | None = None,
                 clock: Callable[[], float] = time.monotonic, rand: Callable[[], float] = random.random) -> None:
        self.runners = {name: Runner(engine, default_retry, on_event, clock, rand) for name, engine in engines.items()}
        # Decoding is CPU work: one ffmpeg per usable core, across all jobs, taken in chunk order,
        # gets the first chunks to the engines soonest (sixteen at once would all finish late together).
        self.decoders = decoders or usable_cpus()
        self.decode_slots = asyncio.Semaphore(self.decoders)

    def __getitem__(self, engine: str) -> Runner:
        return self.runners[engine]

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: runner.stats() for name, runner in self.runners.items()}
