"""`fedledger bench cli`: how long the commands people type most take to answer (import cost).

Each command runs as a fresh process, as a user types it; the median of several runs is reported
with the heavy libraries each one imported (none, for these two: imports are lazy).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from ledger.cli.bench.common import add_output_arguments, emit, median

RUNS = 7
HEAVY = ("torch", "web3", "eth_account", "sqlalchemy", "flask", "numpy", "requests")
TARGET_SECONDS = 1.0

# Runs the entry point in-process and reports which heavy modules it pulled in.
_PROBE = (
    "import sys, json; from ledger.cli.main import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    "print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)\n"
)


def add_bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("cli", help="wall time of `fedledger --help` and `fedledger devnet status`")
    parser.add_argument("--runs", type=int, default=RUNS)
    add_output_arguments(parser)
    parser.set_defaults(handler=_run)


def measure(command: list[str], runs: int) -> dict[str, Any]:
    """Median wall seconds of `python -m ledger.cli <command>` and the heavy modules it imported."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ledger.cli", *command], capture_output=True, check=False, timeout=120)
        seconds.append(time.perf_counter() - started)
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *command], capture_output=True, text=True, timeout=120
    )
    imported = json.loads(probe.stderr.strip().splitlines()[-1])
    return {"median_seconds": median(seconds), "runs": runs, "heavy_modules_imported": imported}


def _run(args: argparse.Namespace) -> int:
    from ledger.core.polling import free_port

    commands = {
        "fedledger --help": measure(["--help"], args.runs),
        "fedledger devnet status": measure(["devnet", "status", "--port", str(free_port())], args.runs),
    }
    report = {
        "benchmark": "cli",
        "target_seconds": TARGET_SECONDS,
        "commands": commands,
        "meets_target": all(c["median_seconds"] <= TARGET_SECONDS for c in commands.values()),
        "note": "each run a fresh process (python -m ledger.cli), so interpreter start-up is included",
    }
    emit(report, as_json=args.json)
    return 0
