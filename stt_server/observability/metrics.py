"""The MetricsCollector: counters, fixed-bucket histograms and percentile reservoirs, fed by events.

Pure data structures: the collector learns from domain events (an ``EventBus`` listener) and from
an HTTP middleware, and is read by ``/metrics`` (through stt_server/observability/prometheus.py) and ``/v1/admin/stats``. Nothing here does I/O.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from aiohttp import web

from stt_server.jobs.events import TERMINAL_EVENTS, Event

Labels = tuple[tuple[str, str], ...]

CHUNK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
JOB_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
QUANTILES = (50.0, 95.0, 99.0)
MAX_TRACKED_JOBS = 10_000


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks; None if empty."""
    if not values:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Histogram:
    """Counts per fixed upper bound (``le``, inclusive), plus a sum and a count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.bounds):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for n in self.counts:
            running += n
            out.append(running)
        return out


@dataclass
class Reservoir:
    """The most recent ``size`` observations: a bounded ring for p50/p95/p99 of recent behaviour."""

    size: int = 2048
    values: deque[float] = field(default_factory=deque)

    def add(self, value: float) -> None:
        self.values.append(value)
        while len(self.values) > self.size:
            self.values.popleft()

    def summary(self, quantiles: Iterable[float] = QUANTILES) -> dict[str, Any]:
        data = list(self.values)
        out: dict[str, Any] = {"count": len(data)}
        for q in quantiles:
            value = percentile(data, q)
            out[f"p{q:g}"] = None if value is None else round(value, 4)
        return out


@dataclass
class LabeledHistograms:
    """One histogram per label set, all with the same buckets."""

    bounds: tuple[float, ...]
    series: dict[Labels, Histogram] = field(default_factory=dict)

    def observe(self, labels: Labels, value: float) -> None:
        hist = self.series.get(labels)
        if hist is None:
            hist = self.series[labels] = Histogram(self.bounds)
        hist.observe(value)


@dataclass
class _JobTrack:
    created_at: float | None = None
    engine: str = "unknown"
    chunk_started: dict[int, float] = field(default_factory=dict)


class MetricsCollector:
    """Job, chunk and HTTP latency; fed by :meth:`on_event` and :meth:`observe_http`."""

    def __init__(self, reservoir_size: int = 2048) -> None:
        self.chunk_latency = LabeledHistograms(CHUNK_BUCKETS)
        self.job_latency = LabeledHistograms(JOB_BUCKETS)
        self.real_time_factor = LabeledHistograms(RTF_BUCKETS)
        self.http_latency = LabeledHistograms(HTTP_BUCKETS)
        self.chunk_recent = Reservoir(reservoir_size)
        self.job_recent = Reservoir(reservoir_size)
        self.rtf_recent = Reservoir(reservoir_size)
        self._jobs: OrderedDict[str, _JobTrack] = OrderedDict()

    def _track(self, job_id: str) -> _JobTrack:
        track = self._jobs.get(job_id)
        if track is None:
            track = self._jobs[job_id] = _JobTrack()
            while len(self._jobs) > MAX_TRACKED_JOBS:
                self._jobs.popitem(last=False)
        return track

    def on_event(self, event: Event) -> None:
        """The EventBus listener: chunk and job timings from the events' own timestamps and data."""
        if event.job_id is None:
            return
        track = self._track(event.job_id)
        data = event.data
        if event.name == "job.created":
            track.created_at = event.created_at
        elif event.name == "job.started":
            track.engine = str(data.get("engine") or track.engine)
        elif event.name == "chunk.started" and data.get("attempt", 1) == 1:
            track.chunk_started[int(data.get("index", -1))] = event.created_at
        elif event.name == "chunk.completed":
            self._chunk_done(track, event)
        elif event.name == "job.completed":
            self._job_done(track, event)
        if event.name in TERMINAL_EVENTS:
            self._jobs.pop(event.job_id, None)

    def _chunk_done(self, track: _JobTrack, event: Event) -> None:
        began = track.chunk_started.pop(int(event.data.get("index", -1)), None)
        seconds = event.data.get("seconds")
        if seconds is None and began is not None:
            seconds = event.created_at - began
        if seconds is not None:  # cache hits and silent chunks never reach the engine: not counted
            self.chunk_latency.observe((("engine", track.engine),), float(seconds))
            self.chunk_recent.add(float(seconds))

    def _job_done(self, track: _JobTrack, event: Event) -> None:
        data = event.data
        working = float(data.get("seconds") or 0.0)
        end_to_end = event.created_at - track.created_at if track.created_at is not None else working
        labels = (("engine", track.engine),)
        self.job_latency.observe(labels, end_to_end)
        self.job_recent.add(end_to_end)
        duration = float(data.get("duration_s") or 0.0)
        if duration > 0 and not data.get("cached"):
            self.real_time_factor.observe(labels, working / duration)
            self.rtf_recent.add(working / duration)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_latency.observe((("method", method), ("route", route), ("status", str(status))), seconds)

    def summary(self) -> dict[str, Any]:
        """p50, p95 and p99 of recent job latency (end to end), chunk latency and real-time factor."""
        return {"job_latency_s": self.job_recent.summary(), "chunk_latency_s": self.chunk_recent.summary(),
                "real_time_factor": self.rtf_recent.summary()}


METRICS: web.AppKey[MetricsCollector] = web.AppKey("metrics", MetricsCollector)



def route_label(request: web.Request) -> str:
    """The matched route's template (``/v1/jobs/{id}``), never the raw path, to bound cardinality."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"
