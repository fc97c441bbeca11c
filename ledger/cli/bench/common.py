"""`fedledger bench ...`: benchmarks that print one JSON object (medians, ratios, targets).

Each benchmark module exposes `add_bench(subparsers)`; claims about speed, gas and memory live in
these outputs, measured side by side in one run, never in timed tests.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_MODULES = (
    "ledger.cli.bench.gas",
    "ledger.cli.bench.index",
    "ledger.cli.bench.aggregate",
    "ledger.cli.bench.round",
    "ledger.cli.bench.cli",
    "ledger.cli.bench.updates",
    "ledger.cli.bench.tasks",
    "ledger.cli.bench.robustness",
    "ledger.cli.bench.load",
    "ledger.cli.bench.watch",
)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="run a benchmark and print its figures as JSON")
    sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    for name in BENCH_MODULES:
        importlib.import_module(name).add_bench(sub)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print only the JSON object (for scripts)")


def emit(report: dict[str, Any], *, as_json: bool) -> None:
    """Print the report: bare JSON for machines, indented JSON for people."""
    print(json.dumps(report, sort_keys=True) if as_json else json.dumps(report, indent=2, sort_keys=True))


def median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU of another process, from /proc (None where there is no /proc)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
