"""What every scenario shares: result rows beside their baselines, charts to draw, statistics, progress."""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence, TextIO


@dataclass(frozen=True)
class Row:
    """One measurement beside its baseline, as a line of the results table.

    ``ratio`` compares value and baseline in the direction ``ratio_label`` names (e.g. baseline
    seconds / server seconds, "× faster"); ``met`` says whether ``target`` holds (None: no target).
    """

    scenario: str
    measure: str
    value: str
    baseline: str = ""
    ratio: float | None = None
    ratio_label: str = ""
    target: str = ""
    met: bool | None = None


@dataclass(frozen=True)
class Chart:
    """A chart for report.py: bars (or lines) of ``series`` over the ``x`` labels."""

    name: str
    title: str
    x: list[str]
    series: dict[str, list[float]]
    y_label: str
    kind: str = "bar"  # or "line"
    x_label: str = ""


@dataclass
class Outcome:
    """What one scenario hands back: rows for the table, charts, raw figures for the JSON."""

    name: str
    rows: list[Row] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank: the value that q % of the sample does not exceed."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator and not math.isnan(denominator) else None


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def secs(seconds: float) -> str:
    return f"{seconds:.2f} s"


def mb(value: float) -> str:
    return f"{value:.0f} MB"


class Progress:
    """One line per step with the elapsed time; on a terminal, a bar of scenarios done redrawn in place."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.done, self.stream, self.clock = total, 0, stream, clock
        self.began = clock()
        self.scenario = ""
        self.tty = stream.isatty()

    def start(self, scenario: str) -> None:
        self.scenario = scenario
        self.step("started")

    def finish(self) -> None:
        self.done += 1
        self.step("done")

    def step(self, message: str) -> None:
        elapsed = self.clock() - self.began
        stamp = f"{int(elapsed // 60):02d}:{elapsed % 60:04.1f}"
        line = f"[{stamp}] [{self.done}/{self.total}] {self.scenario}: {message}"
        if self.tty:
            width = 20
            filled = int(width * self.done / max(self.total, 1))
            bar = f"[{'#' * filled}{'.' * (width - filled)}]"
            self.stream.write(f"\r\033[K{line}\n{bar} {self.done}/{self.total} {stamp}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class Quiet(Progress):
    """A Progress that says nothing (tests call the scenarios' measuring functions directly)."""

    def __init__(self) -> None:
        super().__init__(1)

    def step(self, message: str) -> None:
        pass
