"""The figures of ``/metrics`` as Prometheus metric families, from one snapshot per scrape.

:class:`ServerCollector` is a prometheus_client custom collector over a :class:`Snapshot` (the
store's job counts are read asynchronously before the scrape; everything else is in memory).
Conventions: a total that only grows is a counter (``_total``), durations are ``_seconds``, every
sample of a metric carries the same label names, and states are a StateSet, descriptions an Info.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    InfoMetricFamily, Metric, StateSetMetricFamily)
from prometheus_client.registry import Collector

from stt_server.jobs.job import Status
from stt_server.observability.looplag import LoopLagMonitor
from stt_server.observability.metrics import LabeledHistograms, MetricsCollector
from stt_server.services import Services

# The text format generate_latest writes (version 0.0.4), whatever the client library's newest is.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CIRCUIT_STATES = ("closed", "open", "half_open")
CACHE_COUNTERS = {"hits": "Cache lookups that found the entry", "misses": "Cache lookups that did not",
                  "errors": "Cache tier failures (the tier was bypassed)", "evictions": "Entries the tier dropped"}
CACHE_GAUGES = {"entries": "Entries held", "bytes": "Bytes held", "available": "1 while the tier is in use"}
# Flat figures an engine's stats() may have: (metric, kind, help).
ENGINE_FIGURES = {
    "calls": ("stt_engine_calls", "counter", "Chunks the engine transcribed"),
    "busy_seconds": ("stt_engine_busy_seconds", "counter", "Seconds the engine spent transcribing"),
    "audio_seconds": ("stt_engine_audio_seconds", "counter", "Seconds of audio the engine transcribed"),
    "busy": ("stt_engine_busy", "gauge", "Calls running now"),
    "workers": ("stt_engine_workers", "gauge", "Calls the engine runs at once"),
    "threads": ("stt_engine_threads", "gauge", "CPU threads per call"),
}
UPSTREAM_LABELS = ["engine", "upstream"]


@dataclass(frozen=True)
class Snapshot:
    """What one scrape reads: the services, the collector, the loop-lag monitor and the job counts."""

    services: Services
    collector: MetricsCollector
    job_counts: Mapping[str, int]
    loop_lag: LoopLagMonitor | None = None


def _histogram(name: str, help: str, series: LabeledHistograms, label_names: list[str]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, help, labels=label_names)
    for labels, hist in sorted(series.series.items()):
        buckets = [(repr(float(b)), float(n)) for b, n in zip(hist.bounds, hist.cumulative())]
        buckets.append(("+Inf", float(hist.count)))
        family.add_metric([v for _, v in labels], buckets, hist.total)
    return family


def _upstream_histogram(family: HistogramMetricFamily, labels: list[str], latency: Mapping[str, Any]) -> None:
    pairs = sorted((float(b), float(n)) for b, n in latency.get("le", {}).items())
    buckets = [(repr(b), n) for b, n in pairs if b != float("inf")]
    buckets.append(("+Inf", float(latency.get("count", 0))))
    family.add_metric(labels, buckets, float(latency.get("sum", 0.0)))


class ServerCollector(Collector):
    """Every stt_* family, built from the snapshot on each collect()."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.s = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs_and_queue()
        yield from self._latency()
        yield from self._cache()
        yield from self._engines()
        yield from self._server()

    def _jobs_and_queue(self) -> Iterator[Metric]:
        svc = self.s.services
        jobs = GaugeMetricFamily("stt_jobs", "Jobs in the store by status", labels=["status"])
        for status in Status:
            jobs.add_metric([status.value], self.s.job_counts.get(status.value, 0))
        yield jobs
        depth = GaugeMetricFamily("stt_queue_depth", "Jobs waiting in the queue by priority", labels=["priority"])
        for priority, n in svc.queue.depth_by_priority().items():
            depth.add_metric([priority], n)
        yield depth
        yield GaugeMetricFamily("stt_queue_max", "Queued jobs allowed before uploads get 429", svc.queue.max_queued)
        yield GaugeMetricFamily("stt_workers", "Job workers", svc.workers.count)
        yield GaugeMetricFamily("stt_workers_busy", "Job workers running a job", svc.workers.busy)
        events = CounterMetricFamily("stt_events", "Domain events emitted since start, by name", labels=["event"])
        for name, n in sorted(svc.bus.counts.items()):
            events.add_metric([name], n)
        yield events

    def _latency(self) -> Iterator[Metric]:
        c = self.s.collector
        yield _histogram("stt_chunk_latency_seconds", "Time from a chunk's first engine attempt to its "
                         "completion, per engine", c.chunk_latency, ["engine"])
        yield _histogram("stt_job_latency_seconds", "Job latency end to end, from upload to completed "
                         "transcript, per engine", c.job_latency, ["engine"])
        yield _histogram("stt_job_real_time_factor", "Processing seconds per second of audio for "
                         "transcribed jobs, per engine", c.real_time_factor, ["engine"])
        yield _histogram("stt_http_request_duration_seconds", "HTTP request latency by method, route "
                         "template and status", c.http_latency, ["method", "route", "status"])

    def _cache(self) -> Iterator[Metric]:
        cache = self.s.services.cache
        if cache is None:
            return
        rows = cache.stats()
        for key, help in CACHE_COUNTERS.items():
            family = CounterMetricFamily(f"stt_cache_{key}", f"{help}, per tier", labels=["tier"])
            for tier, row in rows.items():
                family.add_metric([tier], float(row.get(key, 0)))
            yield family
        for key, help in CACHE_GAUGES.items():
            gauge = GaugeMetricFamily(f"stt_cache_{key}", f"{help}, per tier", labels=["tier"])
            for tier, row in rows.items():
                gauge.add_metric([tier], float(row.get(key, 0)))
            yield gauge

    def _engines(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily("stt_engine_ready", "1 once the engine can take work", labels=["engine"])
        info = InfoMetricFamily("stt_engine", "The model each engine serves", labels=["engine"])
        figures = {key: (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
            name, help, labels=["engine"]) for key, (name, kind, help) in ENGINE_FIGURES.items()}
        model = CounterMetricFamily("stt_engine_model_seconds", "Seconds the embedded model spent in each part "
                                    "of its calls (features, encoder, decoder, ...)", labels=["engine", "part"])
        upstreams = _UpstreamFamilies()
        for name, engine in self.s.services.engines.items():
            ready.add_metric([name], float(engine.ready))
            info.add_metric([name], {"model": str(engine.model)})
            stats = _stats(self.s.services.dispatch[name])  # the engine's figures with its runner's
            for key, family in figures.items():
                if isinstance(stats.get(key), (int, float)):
                    family.add_metric([name], float(stats[key]))
            for part, seconds in (stats.get("model_seconds") or {}).items():
                model.add_metric([name, str(part)], float(seconds))
            for upstream, row in (stats.get("upstreams") or {}).items():
                upstreams.add(name, str(upstream), row)
        yield ready
        yield info
        yield from (f for f in (*figures.values(), model) if f.samples)
        yield from upstreams.families()

    def _server(self) -> Iterator[Metric]:
        svc = self.s.services
        yield GaugeMetricFamily("stt_uptime_seconds", "Seconds since the services opened", time.time() - svc.started_at)
        yield GaugeMetricFamily("stt_ready", "1 when /readyz answers 200", float(svc.ready))
        monitor = self.s.loop_lag
        if monitor is None:
            return
        summary = monitor.summary()
        for key, help in (("p50_s", "median"), ("p99_s", "99th percentile")):
            name = f"stt_event_loop_lag_{key[:-2]}_seconds"
            yield GaugeMetricFamily(name, f"How late the event loop woke a 0.1 s sleeper over the last "
                                    f"minute: the {help}", float(summary[key] or 0.0))
        yield GaugeMetricFamily("stt_event_loop_lag_max_seconds", "The event loop's worst lag since start",
                                float(summary["max_s"]))


def _stats(engine: Any) -> dict[str, Any]:
    """``engine.stats()`` (an engine's or its dispatch runner's), or nothing when it fails."""
    try:
        return dict(engine.stats())
    except Exception:  # noqa: BLE001 - one engine's broken stats must not hide the rest
        return {}


class _UpstreamFamilies:
    """The pool figures of every upstream of every engine, labelled engine and upstream."""

    def __init__(self) -> None:
        g, c = GaugeMetricFamily, CounterMetricFamily
        self.info = InfoMetricFamily("stt_upstream", "Where an upstream is and how it is reached",
                                     labels=UPSTREAM_LABELS)
        self.circuit = StateSetMetricFamily("stt_upstream_circuit", "The upstream's circuit breaker state",
                                            labels=UPSTREAM_LABELS)
        self.requests = c("stt_upstream_requests", "Requests sent upstream, by HTTP status (0: no answer)",
                          labels=[*UPSTREAM_LABELS, "status"])
        self.latency = HistogramMetricFamily("stt_upstream_request_duration_seconds", "Upstream request latency",
                                             labels=UPSTREAM_LABELS)
        self.simple: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "connections_open": g("stt_upstream_connections_open", "Open pooled connections", labels=UPSTREAM_LABELS),
            "in_flight": g("stt_upstream_in_flight", "Requests in flight", labels=UPSTREAM_LABELS),
            "consecutive_failures": g("stt_upstream_consecutive_failures", "Failures since the last success",
                                      labels=UPSTREAM_LABELS),
            "connections_opened_total": c("stt_upstream_connections_opened", "Connections opened",
                                          labels=UPSTREAM_LABELS),
            "retries_total": c("stt_upstream_retries", "Requests retried", labels=UPSTREAM_LABELS),
            "circuit_opened_total": c("stt_upstream_circuit_opened", "Times the circuit opened",
                                      labels=UPSTREAM_LABELS),
            "format_fallbacks_total": c("stt_upstream_format_fallbacks", "Times the upstream refused the upload "
                                        "format and moved to a plainer one", labels=UPSTREAM_LABELS),
        }

    def add(self, engine: str, upstream: str, row: Mapping[str, Any]) -> None:
        labels = [engine, upstream]
        self.info.add_metric(labels, {k: str(row[k]).lower() if isinstance(row[k], bool) else str(row[k])
                                      for k in ("base_url", "model", "http2", "upload_format") if k in row})
        if row.get("circuit") in CIRCUIT_STATES:
            self.circuit.add_metric(labels, {s: row["circuit"] == s for s in CIRCUIT_STATES})
        for status, n in sorted((row.get("requests_by_status") or {}).items()):
            self.requests.add_metric([*labels, str(status)], float(n))
        if isinstance(row.get("latency_s"), Mapping):
            _upstream_histogram(self.latency, labels, row["latency_s"])
        for key, family in self.simple.items():
            if isinstance(row.get(key), (int, float)):
                family.add_metric(labels, float(row[key]))

    def families(self) -> Iterator[Metric]:
        every = [self.info, self.circuit, self.requests, self.latency, *self.simple.values()]
        return (f for f in every if f.samples)


def exposition(snapshot: Snapshot) -> bytes:
    """The text exposition of one scrape: the server's families and the process collector's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(snapshot))
    ProcessCollector(registry=registry)
    return generate_latest(registry)
