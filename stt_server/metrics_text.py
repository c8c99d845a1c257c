"""The Prometheus text exposition format (version 0.0.4), written by hand: families, samples, escaping.

Also the generic flattening of an engine's nested ``stats()`` dict into gauges and counters, so a
new engine (or a new field) shows up in ``/metrics`` without code here knowing about it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(*parts: str) -> str:
    """A valid metric or label name from free-form parts (``a.b-c`` → ``a_b_c``)."""
    name = _NAME_BAD.sub("_", "_".join(p for p in parts if p)).strip("_")
    name = re.sub(r"__+", "_", name)
    return f"_{name}" if name[:1].isdigit() else name


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def format_bound(bound: float) -> str:
    """A bucket's ``le`` as Prometheus' own clients write it: ``1.0``, ``0.25``, ``+Inf``."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels) + "}"


@dataclass
class Family:
    """One metric family: a name, a type, a help text and its samples (suffix, labels, value)."""

    name: str
    kind: str  # counter, gauge, histogram, untyped
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, labels: Labels = (), suffix: str = "") -> None:
        self.samples.append((suffix, labels, float(value)))

    def lines(self) -> Iterator[str]:
        yield f"# HELP {self.name} {escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.kind}"
        for suffix, labels, value in self.samples:
            yield f"{self.name}{suffix}{format_labels(labels)} {format_value(value)}"


class Exposition:
    """Families by name, in the order first added; a family added twice keeps one header."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}

    def family(self, name: str, kind: str, help: str) -> Family:
        found = self._families.get(name)
        if found is None:
            found = self._families[name] = Family(name, kind, help)
        return found

    def gauge(self, name: str, help: str, value: float, labels: Labels = ()) -> None:
        self.family(name, "gauge", help).add(value, labels)

    def histogram(self, name: str, help: str, labels: Labels, bounds: Iterable[float],
                  cumulative: Iterable[int], total: float, count: int) -> None:
        """One labelled series of a histogram: cumulative bucket counts, ``+Inf``, sum and count."""
        fam = self.family(name, "histogram", help)
        for bound, n in zip(bounds, cumulative):
            fam.add(n, (*labels, ("le", format_bound(bound))), "_bucket")
        fam.add(count, (*labels, ("le", "+Inf")), "_bucket")
        fam.add(total, labels, "_sum")
        fam.add(count, labels, "_count")

    def render(self) -> str:
        out = [line for fam in self._families.values() if fam.samples for line in fam.lines()]
        return "\n".join(out) + "\n"


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


Leaf = tuple[str, str, Labels, float, str]  # family name, sample suffix, labels, value, kind


def flatten_stats(stats: Mapping[str, Any], path: tuple[str, ...] = (),
                  labels: Labels = ()) -> Iterator[Leaf]:
    """Numeric leaves of a nested stats dict as ``(family, suffix, labels, value, kind)``.

    Names join the path with ``_``. Conventions: a dict whose values are all dicts
    (``upstreams: {name: {...}}``) turns its keys into a label named after it in the singular
    (``upstream``); ``x_by_y: {k: n}`` gives ``x_by_y`` with label ``y=k``; ``{"le": {bound: n},
    "count": n, "sum": s}`` is a histogram; a string leaf is a state-set sample
    (``circuit{circuit="open"} 1``) unless its label is already set; any other dict extends the
    name. Lists and ``None`` are skipped. A name ending in ``_total`` is a counter, others gauges.
    """
    taken = {name for name, _ in labels}
    for key, value in stats.items():
        key = str(key)
        name = metric_name(*path, key)
        number = _numeric(value)
        if number is not None:
            yield name, "", labels, number, "counter" if name.endswith("_total") else "gauge"
        elif isinstance(value, str) and metric_name(key) not in taken:
            yield name, "", (*labels, (metric_name(key), value)), 1.0, "gauge"
        elif isinstance(value, Mapping) and value:
            yield from _flatten_mapping(key, value, path, labels)


def _flatten_mapping(key: str, value: Mapping[str, Any], path: tuple[str, ...],
                     labels: Labels) -> Iterator[Leaf]:
    name = metric_name(*path, key)
    if isinstance(value.get("le"), Mapping) and "count" in value:
        yield from _histogram(name, value, labels)
    elif "_by_" in key:
        label = metric_name(key.rsplit("_by_", 1)[1])
        for sub, leaf in value.items():
            number = _numeric(leaf)
            if number is not None:
                yield name, "", (*labels, (label, str(sub))), number, "gauge"
    elif all(isinstance(v, Mapping) for v in value.values()):
        label = metric_name(key[:-1] if key.endswith("s") and len(key) > 1 else key)
        for sub, inner in value.items():
            yield from flatten_stats(inner, path, (*labels, (label, str(sub))))
    else:
        yield from flatten_stats(value, (*path, key), labels)


def _histogram(name: str, value: Mapping[str, Any], labels: Labels) -> Iterator[Leaf]:
    buckets = sorted((float(b), float(n)) for b, n in value["le"].items())
    count = float(_numeric(value.get("count")) or 0.0)
    for bound, n in buckets:
        if not math.isinf(bound):
            yield name, "_bucket", (*labels, ("le", format_bound(bound))), n, "histogram"
    yield name, "_bucket", (*labels, ("le", "+Inf")), count, "histogram"
    yield name, "_sum", labels, float(_numeric(value.get("sum")) or 0.0), "histogram"
    yield name, "_count", labels, count, "histogram"


def add_stats(expo: Exposition, prefix: str, help: str, stats: Mapping[str, Any], labels: Labels) -> None:
    """Every numeric field of ``stats`` under ``prefix``; a field whose kind clashes is dropped."""
    for name, suffix, series_labels, value, kind in flatten_stats(stats, (), labels):
        fam = expo.family(metric_name(prefix, name), kind, f"{help}: {name}")
        if fam.kind == kind:
            fam.add(value, series_labels, suffix)
