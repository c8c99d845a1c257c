"""Writing the results: JSON (everything), a Markdown table (the rows), PNG charts (matplotlib, if installed)."""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path
from typing import Any, Sequence

from benchmarks.harness import Chart, Outcome, Row

HEADER = ("| scenario | measure | result | baseline | ratio | target | met |\n"
          "|---|---|---|---|---|---|---|")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _met(row: Row) -> str:
    return "" if row.met is None else ("yes" if row.met else "**no**")


def _ratio(row: Row) -> str:
    """``2.50 × faster``; below 1, the other way round: ``0.5 × faster`` reads ``2.00 × slower``."""
    if row.ratio is None:
        return ""
    if row.ratio_label.endswith("× faster") and 0 < row.ratio < 1:
        return f"{1 / row.ratio:.2f} {row.ratio_label.replace('faster', 'slower')}"
    return f"{row.ratio:.2f} {row.ratio_label}".strip()


def markdown(outcomes: Sequence[Outcome], command: str, machine: str) -> str:
    """The results table, with the command that produced it and the machine it ran on."""
    lines = [f"`{command}` on {machine}", "", HEADER]
    for outcome in outcomes:
        if outcome.error:
            lines.append(f"| {outcome.name} | failed: {_cell(outcome.error)} | | | | | **no** |")
        for r in outcome.rows:
            ratio = _ratio(r)
            lines.append(f"| {r.scenario} | {_cell(r.measure)} | {_cell(r.value)} | {_cell(r.baseline)} | "
                         f"{_cell(ratio)} | {_cell(r.target)} | {_met(r)} |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    """A short description: CPUs, memory, Python."""
    try:
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal:"))
        memory = f", {mem_kb / 1024 / 1024:.0f} GB RAM"
    except (OSError, StopIteration):
        memory = ""
    return f"{os.cpu_count()} CPUs{memory}, Python {platform.python_version()}"


def write_json(path: Path, outcomes: Sequence[Outcome], meta: dict[str, Any]) -> None:
    data = {"meta": meta, "scenarios": [o.to_dict() for o in outcomes]}
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")


def write_charts(folder: Path, outcomes: Sequence[Outcome]) -> list[Path] | str:
    """One PNG per chart; a message instead when matplotlib is missing (``pip install -e '.[bench]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "charts skipped: matplotlib is not installed (pip install -e '.[bench]')"
    written = []
    for chart in (c for o in outcomes for c in o.charts):
        fig, ax = plt.subplots(figsize=(7, 4))
        _draw(ax, chart)
        fig.tight_layout()
        path = folder / (re.sub(r"[^\w-]", "_", chart.name) + ".png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _draw(ax: Any, chart: Chart) -> None:
    names = list(chart.series)
    if chart.kind == "line":
        for name in names:
            ax.plot(chart.x, chart.series[name], marker="o", label=name)
    else:
        width = 0.8 / max(len(names), 1)
        for i, name in enumerate(names):
            xs = [n + (i - (len(names) - 1) / 2) * width for n in range(len(chart.x))]
            bars = ax.bar(xs, chart.series[name], width, label=name)
            ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.set_xticks(range(len(chart.x)), chart.x, fontsize=8)
    ax.set_title(chart.title, fontsize=9)
    ax.set_ylabel(chart.y_label)
    if chart.x_label:
        ax.set_xlabel(chart.x_label)
    if len(names) > 1:
        ax.legend(fontsize=8)
