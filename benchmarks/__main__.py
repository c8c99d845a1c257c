"""Every performance target beside its baseline, in one run: ``python -m benchmarks``.

Builds its inputs from ../shared/corpus (cached in a temporary directory), runs the scenarios
with a line per step on standard error, and writes ``results.json``, ``results.md`` and PNG
charts into benchmarks/results/. Exits 1 when a target is missed or a scenario failed.

    python -m benchmarks                     # everything (about half an hour on 2 cores)
    python -m benchmarks --quick             # the fitness subset (what tests/test_fitness.py checks)
    python -m benchmarks --only cache,ui --repeat 1
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from benchmarks import (fitness, report, scenario_cache, scenario_concurrency, scenario_local, scenario_memory,
                        scenario_remote, scenario_ui, scenario_wire)
from benchmarks.harness import Outcome, Progress

Scenario = Callable[[Progress, int], Outcome]
SCENARIOS: dict[str, Scenario] = {
    "local": scenario_local.run,
    "remote": scenario_remote.run,
    "wire": scenario_wire.run,
    "cache": scenario_cache.run,
    "concurrency": scenario_concurrency.run,
    "memory": scenario_memory.run,
    "ui": scenario_ui.run,
}
RESULTS = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the fitness subset")
    parser.add_argument("--only", help=f"comma-separated scenarios: {','.join(SCENARIOS)}")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timed measurement (medians are quoted)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the results")
    return parser


def selected(args: argparse.Namespace) -> dict[str, Scenario]:
    if args.quick:
        return {"fitness": fitness.run}
    if not args.only:
        return SCENARIOS
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    return {n: SCENARIOS[n] for n in names}


def run_all(scenarios: dict[str, Scenario], repeat: int, progress: Progress) -> list[Outcome]:
    """Each scenario in turn; one that fails is reported in the table and the others still run."""
    outcomes = []
    for name, scenario in scenarios.items():
        progress.start(name)
        began = time.monotonic()
        try:
            outcome = scenario(progress, repeat)
        except Exception as exc:  # noqa: BLE001 - one broken scenario must not lose the others' figures
            traceback.print_exc()
            outcome = Outcome(name, error=f"{type(exc).__name__}: {exc}")
        outcome.seconds = time.monotonic() - began
        outcomes.append(outcome)
        progress.finish()
    return outcomes


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    scenarios = selected(args)
    progress = Progress(len(scenarios))
    outcomes = run_all(scenarios, max(args.repeat, 1), progress)
    progress.close()
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)
    table = report.markdown(outcomes, command.strip(), report.machine())
    (args.out / "results.md").write_text(table, encoding="utf-8")
    report.write_json(args.out / "results.json", outcomes, {"command": command.strip(), "machine": report.machine(),
                                                            "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    charts = report.write_charts(args.out, outcomes)
    print(table)
    print(charts if isinstance(charts, str) else f"{len(charts)} charts, results in {args.out}", file=sys.stderr)
    failed = [o.name for o in outcomes if o.error] + [r.measure for o in outcomes for r in o.rows if r.met is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
