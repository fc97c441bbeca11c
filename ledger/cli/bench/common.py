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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_MODULES = (
    "ledger.cli.bench.gas",
    "ledger.cli.bench.index",
    "ledger.cli.bench.aggregate",
    "ledger.cli.bench.round",
    "ledger.cli.bench.idle",
    "ledger.cli.bench.cli",
    "ledger.cli.bench.scale",
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


def rounded(value: Any, digits: int = 4) -> Any:
    """`value` with every float in it (through dicts and lists) rounded to `digits` places."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item, digits) for item in value]
    return value


def stop_processes(processes: Sequence[Any], stop: Any | None) -> None:
    """Set `stop` (a multiprocessing Event the processes watch), wait for them, then terminate
    (and at last kill) the ones that do not finish."""
    if stop is not None:
        stop.set()
    deadline = time.monotonic() + 15.0
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5.0)
        if process.is_alive():
            process.kill()
            process.join(timeout=5.0)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The sample at `fraction` of the sorted samples (nearest rank; p99 of 200 is the 198th)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


# ---------------------------------------------------------------------------------- memory (Linux /proc)


def status_kib(field: str) -> int | None:
    """A `/proc/self/status` figure in KiB (VmRSS: resident now, VmHWM: peak), None without /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU of a process so far, from /proc (None where there is no /proc)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux >= 4.0: VmHWM := VmRSS); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return status_kib("VmHWM") is not None


# ---------------------------------------------------------------------------------- HTTP latency


@dataclass(frozen=True)
class Latency:
    """Sequential GETs of one path over one keep-alive connection, after a warm-up tenth."""

    path: str
    requests: int
    response_bytes: int
    p50_ms: float
    p99_ms: float
    last_body: bytes

    def summary(self, *, label: str | None = None) -> dict[str, Any]:
        return {
            "path": label or self.path,
            "requests": self.requests,
            "response_bytes": self.response_bytes,
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
        }


def http_latency(host: str, port: int, path: str, *, requests: int) -> Latency:
    """Time `requests` GETs of `path` (any HTTP/1.1 server); the first tenth more warm caches, uncounted.

    Any answer but 200 raises: a fast error is not a latency.
    """
    import http.client

    connection = http.client.HTTPConnection(host, port, timeout=60)
    latencies: list[float] = []
    body = b""
    try:
        warmup = requests // 10
        for attempt in range(warmup + requests):
            started = time.perf_counter()
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            elapsed = (time.perf_counter() - started) * 1000
            if response.status != 200:
                raise RuntimeError(f"{path}: HTTP {response.status}: {body[:200]!r}")
            if attempt >= warmup:
                latencies.append(elapsed)
    finally:
        connection.close()
    return Latency(
        path=path,
        requests=requests,
        response_bytes=len(body),
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        last_body=body,
    )
