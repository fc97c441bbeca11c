"""`fedledger bench load`: a live round and the audit API while 500 idle and 100 slow clients hold on.

Everything real, on 127.0.0.1 only: anvil (a throwaway devnet), the ledger service as its own
process (`fedledger api serve`, default limits), the indexer as its own process, and the flood as
its own process (`ledger.cli.bench.flood`: idle connections, header drips, unsigned and signed
slow bodies, from 60 loopback addresses, reopened as soon as they are cut). Once the flood holds
its connections, this process measures `GET /api/v1/models/<genesis>/lineage` on a fresh
connection in a loop, while five edge nodes (threads here, each with its own key and HTTP
store) train, upload and submit, and the aggregator verifies and commits the round. Bounded: the
flood stops itself, and every wait has a deadline.

Target: the round commits, every upload and every lineage request is answered, p99 ≤ 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ledger.cli.bench.common import add_output_arguments, emit, process_cpu_seconds

P99_TARGET_MS = 100.0
NODES = 5
SETTLE_SECONDS = 3.0  # each measuring window: without the flood, under it before the round, after the commit
GET_TIMEOUT = 5.0


def add_bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("load", help="a 5-node round and lineage latency while 500 idle + 100 slow clients hold on")
    parser.add_argument("--idle", type=int, default=500, help="idle connections held open (default 500)")
    parser.add_argument("--slow", type=int, default=100, help="slow clients held open (default 100)")
    parser.add_argument("--epochs", type=int, default=1, help="local epochs per node (default 1)")
    add_output_arguments(parser)
    parser.set_defaults(handler=_run)


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class GetProbe:
    """Fresh-connection GETs of one URL in a loop, in a process of its own (so neither the nodes'
    training nor the aggregator in this process can delay it): latencies and failures."""

    def __init__(self, url: str) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.url = url
        self.samples: list[tuple[float, float]] = []  # (wall-clock time it started, latency in ms)
        self.failures: list[str] = []
        self._stop = context.Event()
        self._results = context.Queue()
        self._process = context.Process(target=_probe, args=(url, self._stop, self._results), name="get-probe", daemon=True)

    def start(self) -> GetProbe:
        self._process.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.samples, self.failures = self._results.get(timeout=GET_TIMEOUT + 30)
        self._process.join(10)

    @property
    def latencies_ms(self) -> list[float]:
        return [latency for _, latency in self.samples]

    def between(self, start: float, end: float) -> list[float]:
        """Latencies of the requests started in [start, end) (wall-clock seconds)."""
        return [latency for at, latency in self.samples if start <= at < end]


def _probe(url: str, stop: Any, results: Any) -> None:
    latencies: list[tuple[float, float]] = []
    failures: list[str] = []
    while not stop.is_set():
        at, started = time.time(), time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=GET_TIMEOUT) as response:
                response.read()
            latencies.append((at, (time.perf_counter() - started) * 1000))
        except (urllib.error.URLError, OSError) as exc:
            failures.append(str(exc))
        stop.wait(0.02)  # ~30 requests a second: a busy dashboard, not a second flood
    results.put((latencies, failures))


def measure_load(
    *, idle: int = 500, slow: int = 100, epochs: int = 1, window_seconds: float = SETTLE_SECONDS
) -> dict[str, Any]:
    """Run the scenario once and return its figures (raises if the stack cannot be brought up).

    `window_seconds`: how long latencies are sampled without the flood, then under it before the
    round opens, and again after the commit.
    """
    from aggregator.coordinator import Aggregator, AggregatorConfig
    from ledger.chain.client import LedgerClient
    from ledger.chain.connect import connect
    from ledger.chain.devkeys import dev_account
    from ledger.chain.devnet import throwaway_devnet
    from ledger.config import Settings
    from ledger.tasks.digits import DIGITS_MLP
    from ledger.core.polling import free_port, poll_until, wait_for_port
    from ledger.cli.processes import spawn_logged, stop_all
    from ledger.index.db import make_engine, upgrade
    from ledger.store.http import HttpBlobStore

    settings = Settings()
    fedledger = [sys.executable, "-m", "ledger.cli"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="fedledger-bench-load-") as scratch, throwaway_devnet() as devnet:
        root = Path(scratch)
        w3 = connect(devnet.rpc_url)
        admin, deployed = LedgerClient.deploy(w3, dev_account(0))
        for index in range(NODES):
            admin.register_node(dev_account(index + 1).address)
        flooder = dev_account(NODES + 1)  # an account with a role whose signed uploads drip
        admin.set_aggregator(flooder.address, True)
        database_url = f"sqlite:///{root / 'index.sqlite'}"
        engine = make_engine(database_url)
        upgrade(engine)
        engine.dispose()
        port = free_port()
        chain = ["--rpc-url", devnet.rpc_url, "--contract", admin.address]
        flood = None
        probe = quiet = None
        try:
            children.append(
                spawn_logged(
                    fedledger
                    + ["api", "serve", "--port", str(port), "--blobs-dir", str(root / "blobs")]
                    + ["--database-url", database_url, "--gc-interval-minutes", "0", *chain],
                    root / "api.log",
                    env,
                )
            )
            children.append(
                spawn_logged(
                    fedledger
                    + ["index", "run", "--follow", "--poll-seconds", "0.2", *chain, "--blobs-dir", str(root / "blobs")]
                    + ["--database-url", database_url, "--from-block", str(deployed.block_number)],
                    root / "index.log",
                    env,
                )
            )
            wait_for_port("127.0.0.1", port, timeout=60)
            url = f"http://127.0.0.1:{port}"
            split = DIGITS_MLP.bundled_data()
            store = HttpBlobStore.from_ledger(url, admin, account=dev_account(0), max_bytes=settings.max_blob_bytes)
            config = AggregatorConfig(task=DIGITS_MLP, hyperparameters={"epochs": epochs}, min_updates=NODES, round_seconds=120)
            aggregator = Aggregator(admin, store, split.test, config)
            genesis = aggregator.ensure_genesis()
            lineage = f"{url}/api/v1/models/{genesis}/lineage"
            poll_until(lambda: _answers(lineage), timeout=60, interval=0.2, what="the indexer to serve genesis")
            server_pid = children[0].pid
            cpu = [(time.monotonic(), process_cpu_seconds(server_pid))]
            quiet = GetProbe(lineage).start()  # the same requests without the flood, side by side
            time.sleep(window_seconds)
            quiet.stop()
            cpu.append((time.monotonic(), process_cpu_seconds(server_pid)))

            flood, held_at_start = start_flood(port, idle=idle, slow=slow, flooder_key=NODES + 1, ledger=admin)
            cpu.append((time.monotonic(), process_cpu_seconds(server_pid)))
            flood_cpu = [process_cpu_seconds(flood.pid)]
            probe = GetProbe(lineage).start()
            time.sleep(window_seconds)  # latencies under the flood alone, before the round
            started, round_began = time.perf_counter(), time.time()
            result, outcomes = run_live_round(aggregator, devnet.rpc_url, url, split, epochs=epochs)
            round_seconds, round_ended = time.perf_counter() - started, time.time()
            time.sleep(window_seconds)  # the commit is indexed and served under the flood too
            cpu.append((time.monotonic(), process_cpu_seconds(server_pid)))
            flood_cpu.append(process_cpu_seconds(flood.pid))
        finally:
            if probe is not None:
                probe.stop()
            flood_stats = stop_flood(flood) if flood is not None else {}
            stop_all(children, timeout=15)
    assert quiet is not None
    latencies = probe.latencies_ms if probe is not None else []
    p99 = _percentile(latencies, 0.99) if latencies else None
    return {
        "benchmark": "load",
        "flood": {"idle": idle, "slow": slow, "held_when_the_round_opened": held_at_start, **flood_stats},
        "round": {
            "committed": result.committed,
            "included": len(result.included),
            "rejected": len(result.rejected),
            "node_outcomes": outcomes,
            "seconds": round(round_seconds, 2),
        },
        "lineage": {
            "requests": len(latencies) + len(probe.failures if probe else []),
            "failed": len(probe.failures) if probe else 0,
            "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
            "p99_ms": round(p99, 1) if p99 is not None else None,
            "max_ms": round(max(latencies), 1) if latencies else None,
        },
        "lineage_under_flood_outside_the_round": _summary(
            probe.between(0, round_began) + probe.between(round_ended, float("inf")) if probe else []
        ),
        "lineage_under_flood_during_the_round": _summary(probe.between(round_began, round_ended) if probe else []),
        "lineage_without_flood": {
            "requests": len(quiet.latencies_ms),
            "p50_ms": round(statistics.median(quiet.latencies_ms), 1) if quiet.latencies_ms else None,
            "p99_ms": round(_percentile(quiet.latencies_ms, 0.99), 1) if quiet.latencies_ms else None,
        },
        "cpu_share": {  # of one core, over each window: what the flood costs the server, whatever else runs
            "server_without_flood": _share(cpu[0], cpu[1]),
            "server_under_flood": _share(cpu[2], cpu[3]),
            "flood_process": _share((cpu[2][0], flood_cpu[0]), (cpu[3][0], flood_cpu[1])),
        },
        "target_p99_ms": P99_TARGET_MS,
        "meets_target": bool(result.committed and probe and not probe.failures and p99 is not None and p99 <= P99_TARGET_MS),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "note": "server, indexer, flood and the measuring client are separate processes; nodes and aggregator share this one",
    }


def start_flood(port: int, *, idle: int, slow: int, flooder_key: int, ledger: Any) -> tuple[subprocess.Popen[str], int]:
    """The flood as its own process, once it holds its connections: (process, connections held)."""
    flood = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli.bench.flood", "--port", str(port), "--idle", str(idle)]
        + ["--slow", str(slow), "--dev-key", str(flooder_key), "--chain-id", str(ledger.chain_id)]
        + ["--contract", ledger.address, "--seconds", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        text=True,
    )
    ready = flood.stdout.readline() if flood.stdout else ""
    if not ready.startswith("READY"):
        flood.kill()
        raise RuntimeError(f"the flood did not start: {ready!r}")
    return flood, int(ready.split()[1])


def stop_flood(flood: subprocess.Popen[str]) -> dict[str, Any]:
    """SIGTERM the flood and return the counts it prints as it stops."""
    flood.terminate()
    try:
        out, _ = flood.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        flood.kill()
        out, _ = flood.communicate()
    stats = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return dict(stats[-1]) if stats else {}


def run_live_round(aggregator: Any, rpc_url: str, store_url: str, split: Any, *, epochs: int) -> tuple[Any, list[Any]]:
    """Open a round, have the five dev-key nodes train, upload and submit on threads, and close it.

    Node failures are reported as outcomes, not raised: whether the round survives is the point.
    """
    from edge_node.node import EdgeNode, TrainingConfig
    from ledger.chain.client import LedgerClient
    from ledger.chain.connect import connect
    from ledger.chain.devkeys import dev_account
    from ledger.config import Settings
    from ledger.store.http import HttpBlobStore
    from ledger.tasks.partition import split_examples

    limit = Settings().max_blob_bytes
    task = aggregator.config.task
    shards = split_examples(split.train, NODES, iid=True, seed=0)
    nodes = []
    for index in range(NODES):
        client = LedgerClient(connect(rpc_url), aggregator.client.address, dev_account(index + 1))
        store = HttpBlobStore.from_ledger(store_url, client, account=client.account, max_bytes=limit)
        config = TrainingConfig(task=task, hyperparameters={"epochs": epochs}, seed=index)
        nodes.append(EdgeNode(client, store, shards[index], config, max_model_bytes=limit))
    info = aggregator.open_round()
    outcomes: list[Any] = [None] * NODES

    def participate(index: int) -> None:
        try:
            outcomes[index] = nodes[index].participate(info.round).outcome.value
        except Exception as exc:
            outcomes[index] = f"failed: {exc}"

    threads = [threading.Thread(target=participate, args=(i,)) for i in range(NODES)]
    for thread in threads:
        thread.start()
    result = aggregator.close_round(info.round)
    for thread in threads:
        thread.join(60)
    return result, outcomes


def _summary(latencies: list[float]) -> dict[str, Any]:
    if not latencies:
        return {"requests": 0}
    return {
        "requests": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(_percentile(latencies, 0.99), 1),
    }


def _share(start: tuple[float, float | None], end: tuple[float, float | None]) -> float | None:
    """CPU seconds per wall second between two (monotonic time, process CPU) samples."""
    if start[1] is None or end[1] is None or end[0] <= start[0]:
        return None
    return round((end[1] - start[1]) / (end[0] - start[0]), 3)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=GET_TIMEOUT) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _run(args: argparse.Namespace) -> int:
    from ledger.cli.errors import UsageError

    if args.idle < 0 or args.slow < 0 or args.epochs < 1:
        raise UsageError("--idle and --slow must be non-negative and --epochs at least 1")
    emit(measure_load(idle=args.idle, slow=args.slow, epochs=args.epochs), as_json=args.json)
    return 0
