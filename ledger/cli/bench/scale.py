"""`fedledger bench scale`: rounds of 10, 100 and 1,000 nodes on anvil, and the index and API at 100,000 updates.

Per node count N, on a fresh anvil (throwaway, large block gas limit): the admin registers N
node keys; the ledger service (blob store + API, uvicorn + a2wsgi) runs in this process; the real
`Aggregator` runs in its own process and opens and closes each round; `--drivers` processes
play the N nodes (`ledger.cli.bench.scale_roles`): each node's real update blob goes through the
signed HTTP store with its own key, and its own `submitUpdate` transaction. Every
`--reject-every`-th node sends NaNs, so the rejection path runs at every scale. Reported per N:

- submissions per second (N over the time from the round opening to the last receipt);
- the aggregator's time from the last submission's receipt to the finalize receipt, by phase:
  noticing it (poll interval + the event read it closed on), fetch + re-hash, validation and
  merge (work summed over the intake threads, which overlap), intake wall time, recording the
  rejections, the merge result, evaluation, storing model + metadata, the finalize transaction;
- the aggregator's RSS before the round and its peak during it (one fresh process per N);
- total gas of the round (every block from `openRound` to `finalizeRound`: nothing else runs on
  that anvil) and gas per submission;
- afterwards, the index is built from the chain and the API serves it: latency of the tip's
  lineage page and of the last round's page.

Then `ledger.cli.bench.history` measures the indexer and the API at 100,000 updates.
Like `bench round`, this module is a composition root for the aggregator and the node drivers.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ledger.core.policy import DEFAULT_RULE
from ledger.cli.bench.common import (
    add_output_arguments,
    emit,
    http_latency,
    median,
    process_cpu_seconds,
    rounded,
    stop_processes,
)

NODES = (10, 100, 1000)
ROUNDS = 3  # the first is a warm-up (first use of connections, torch, caches) when there are more
DRIVERS = 4
THREADS_PER_DRIVER = 4
REJECT_EVERY = 50
GAS_LIMIT = 1_000_000_000  # registrations go in one block; any limit above ~52M would do for 1,000 nodes
API_REQUESTS = 200
LAST_TO_FINALIZE_TARGET_SECONDS = 5.0
TIME_LIMIT_SECONDS = 2700.0  # the default run (10, 100, 1,000 nodes and the 100,000-update history) on 2 shared cores
START_TIMEOUT = 300.0
ROUND_TIMEOUT = 900.0


def parse_counts(text: str) -> list[int]:
    """`10,100,1000` → [10, 100, 1000]."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated node counts like 10,100,1000, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"node counts must be positive, got {text!r}")
    return counts


# ---------------------------------------------------------------------------------- one node count


def measure_nodes(
    nodes: int, *, rounds: int, drivers: int, threads: int, reject_every: int, api_requests: int, rule: str = DEFAULT_RULE
) -> dict[str, Any]:
    """`rounds` rounds of `nodes` nodes on a fresh anvil; see the module docstring."""
    from ledger.api.app import create_app
    from ledger.api.server import serve_in_thread
    from ledger.chain.client import LedgerClient
    from ledger.chain.connect import connect
    from ledger.chain.devkeys import dev_account
    from ledger.chain.devnet import throwaway_devnet
    from ledger.cli.bench import scale_roles
    from ledger.config import Settings
    from ledger.store.local import LocalBlobStore

    settings = Settings()
    drivers = max(1, min(drivers, nodes))
    started = time.monotonic()
    with throwaway_devnet(gas_limit=GAS_LIMIT) as anvil, tempfile.TemporaryDirectory(prefix="fedledger-bench-scale-") as tmp:
        w3 = connect(anvil.rpc_url)
        admin, _ = LedgerClient.deploy(w3, dev_account(0))
        register_nodes(anvil.rpc_url, admin, [scale_roles.node_account(i).address for i in range(nodes)])
        store = LocalBlobStore(Path(tmp) / "blobs", settings.max_blob_bytes)
        app = create_app(store=store, ledger=LedgerClient(connect(anvil.rpc_url), admin.address), max_blob_bytes=settings.max_blob_bytes)
        context = multiprocessing.get_context("spawn")
        reports = context.Queue()
        commands = context.Queue()
        stop = context.Event()
        processes: list[multiprocessing.process.BaseProcess] = []
        stages = {"setup": time.monotonic() - started}  # deploy, fund and register the N keys
        with serve_in_thread(app, threads=8) as server:
            try:
                processes.append(
                    context.Process(
                        target=scale_roles.aggregator_process,
                        args=(anvil.rpc_url, admin.address, server.url, int(ROUND_TIMEOUT), rule, commands, reports),
                        name="bench-scale-aggregator",
                        daemon=True,
                    )
                )
                for driver in range(drivers):
                    share = list(range(driver, nodes, drivers))
                    processes.append(
                        context.Process(
                            target=scale_roles.driver_process,
                            args=(driver, share, anvil.rpc_url, admin.address, server.url, threads, reject_every, reports, stop),
                            name=f"bench-scale-driver-{driver}",
                            daemon=True,
                        )
                    )
                marker = time.monotonic()
                for process in processes:
                    process.start()
                _wait_ready(reports, len(processes))
                stages["start_processes"] = time.monotonic() - marker
                marker = time.monotonic()
                roles: dict[str, list[int | None]] = {
                    "anvil": [anvil.pid()],
                    "ledger_service": [os.getpid()],
                    "aggregator": [processes[0].pid],
                    "drivers": [process.pid for process in processes[1:]],
                }
                per_round = []
                for _ in range(rounds):
                    cpu_before = _cpu_by_role(roles)
                    commands.put("round")
                    aggregator_round, submitted = _collect_round(reports, nodes)
                    figures = _round_figures(anvil.rpc_url, admin, aggregator_round, submitted)
                    figures["cpu_seconds"] = {
                        role: after - cpu_before[role] for role, after in _cpu_by_role(roles).items()
                    }
                    per_round.append(figures)
                commands.put("stop")
                stages["rounds"] = time.monotonic() - marker
            finally:
                commands.put("stop")  # the aggregator waits on its command queue
                stop_processes(processes, stop)
            marker = time.monotonic()
            api = _api_latency(anvil.rpc_url, admin.address, store, requests=api_requests)
            stages["api"] = time.monotonic() - marker
    stages["end_to_end"] = time.monotonic() - started
    bad = sum(scale_roles.is_bad_node(i, reject_every) for i in range(nodes))
    return _nodes_report(nodes, bad, drivers, threads, stages, per_round, api)


def register_nodes(rpc_url: str, admin: Any, addresses: Sequence[str]) -> None:
    """Fund and register `addresses` in one block (admin's dev key is unlocked on anvil)."""
    from ledger.chain.calldata import encode_call as encode
    from ledger.chain.devnet import rpc_batch, rpc_call

    rpc_batch(rpc_url, [("anvil_setBalance", [address, hex(10**21)]) for address in addresses], timeout=120)
    nonce = int(admin.w3.eth.get_transaction_count(admin.account.address))
    calls = [
        (
            "eth_sendTransaction",
            [
                {
                    "from": admin.account.address,
                    "to": admin.address,
                    "data": encode("registerNode", [address]),
                    "gas": hex(200_000),
                    "nonce": hex(nonce + offset),
                }
            ],
        )
        for offset, address in enumerate(addresses)
    ]
    rpc_call(rpc_url, "evm_setAutomine", [False], timeout=120)
    try:
        rpc_batch(rpc_url, calls, timeout=120)
        rpc_call(rpc_url, "evm_mine", timeout=120)
    finally:
        rpc_call(rpc_url, "evm_setAutomine", [True], timeout=120)
    missing = [address for address in (addresses[0], addresses[-1]) if not admin.is_node(address)]
    if missing:
        raise RuntimeError(f"registration failed for {missing}")


def _wait_ready(reports: Any, count: int) -> None:
    from ledger.cli.bench.scale_roles import RoleFailed

    ready = 0
    deadline = time.monotonic() + START_TIMEOUT
    while ready < count:
        report = _next(reports, deadline, f"{count - ready} of {count} processes to start")
        if isinstance(report, RoleFailed):
            raise RuntimeError(f"{report.role} failed to start:\n{report.error}")
        ready += 1


def _next(reports: Any, deadline: float, what: str) -> Any:
    try:
        return reports.get(timeout=max(0.1, deadline - time.monotonic()))
    except queue.Empty:
        raise TimeoutError(f"gave up waiting for {what}") from None


def _collect_round(reports: Any, nodes: int) -> tuple[Any, list[Any]]:
    """The aggregator's report of the round and the drivers' N submissions of it."""
    from ledger.cli.bench.scale_roles import AggregatorRound, RoleFailed, Submitted

    deadline = time.monotonic() + ROUND_TIMEOUT
    aggregator_round = None
    submitted: list[Submitted] = []
    while aggregator_round is None or len(submitted) < nodes:
        report = _next(reports, deadline, f"the round: {len(submitted)} of {nodes} submissions reported")
        if isinstance(report, RoleFailed):
            raise RuntimeError(f"{report.role} failed:\n{report.error}")
        if isinstance(report, AggregatorRound):
            aggregator_round = report
        elif isinstance(report, Submitted):
            submitted.append(report)
    if any(s.round != aggregator_round.round for s in submitted):
        raise RuntimeError(f"submissions to other rounds than {aggregator_round.round} were reported")
    if not aggregator_round.committed or aggregator_round.included + aggregator_round.rejected != nodes:
        raise RuntimeError(f"round {aggregator_round.round} did not take all {nodes} submissions: {aggregator_round}")
    return aggregator_round, submitted


def _cpu_by_role(roles: dict[str, list[int | None]]) -> dict[str, float]:
    """CPU seconds used so far by each role's processes (0 where /proc cannot tell)."""
    return {role: sum(process_cpu_seconds(pid) or 0.0 for pid in pids) for role, pids in roles.items()}


def round_gas(rpc_url: str, first_block: int, last_block: int) -> int:
    """Gas of every transaction in blocks [first, last] (on the bench's anvil, all of them the round's)."""
    from ledger.chain.devnet import rpc_batch

    blocks = rpc_batch(
        rpc_url, [("eth_getBlockByNumber", [hex(number), False]) for number in range(first_block, last_block + 1)], timeout=120
    )
    return sum(int(block["gasUsed"], 16) for block in blocks)


def _round_figures(rpc_url: str, admin: Any, aggregator_round: Any, submitted: list[Any]) -> dict[str, Any]:
    from ledger.chain import events
    from ledger.chain.rounds import round_opened_block

    round_number = aggregator_round.round
    opened_block = round_opened_block(admin, round_number)
    committed = [
        e for e in admin.events(opened_block, event_type=events.ModelCommitted) if e.round == round_number
    ]
    gas = round_gas(rpc_url, opened_block, committed[0].ref.block_number)
    timings = aggregator_round.timings
    last_landed = max(s.landed for s in submitted)
    last_to_finalize = aggregator_round.finalized_at - last_landed
    # After the last receipt: the poll noticing it, then close_round's own steps.
    # Rejections are recorded while the model is merged, evaluated and stored: only the wait for
    # them after the store is on the critical path (their whole time is reported beside it).
    phases = {
        "event_read": timings.get("event_reads", 0.0),
        "intake_wall": timings.get("verify", 0.0),
        "merge_result": timings.get("merge_result", 0.0),
        "evaluate": timings.get("evaluate", 0.0),
        "store": timings.get("store", 0.0),
        "rejections_wait": timings.get("rejections_wait", 0.0),
        "finalize": timings.get("chain", 0.0) - timings.get("rejections", 0.0),
    }
    # The rest is the poll noticing the last submission (its sleep and deadline check).
    phases["notice"] = max(0.0, last_to_finalize - sum(phases.values()))
    return {
        "round": round_number,
        "round_seconds": aggregator_round.finalized_at - aggregator_round.opened_at,
        "submissions": len(submitted),
        "included": aggregator_round.included,
        "rejected": aggregator_round.rejected,
        "submit_window_seconds": last_landed - aggregator_round.open_returned_at,
        "submissions_per_second": len(submitted) / max(last_landed - aggregator_round.open_returned_at, 1e-9),
        "node_upload_seconds_median": median([s.uploaded - s.started for s in submitted]),
        "node_submit_seconds_median": median([s.landed - s.uploaded for s in submitted]),
        "last_submission_to_finalize_seconds": last_to_finalize,
        "phases": phases,
        "rejections_seconds": timings.get("rejections", 0.0),
        "intake_work_seconds": {
            "fetch_rehash": timings.get("fetch_rehash", 0.0),
            "validate": timings.get("validate", 0.0),
            "merge": timings.get("merge", 0.0),
        },
        "aggregator_rss_mib": {"before_round": aggregator_round.rss_before_mib, "peak_in_round": aggregator_round.rss_peak_mib},
        "gas": {
            "round_total": gas,
            "submit_median": int(median([s.gas_used for s in submitted])),
            "per_submission": round(gas / len(submitted)),
        },
    }


def _api_latency(rpc_url: str, address: str, store: Any, *, requests: int) -> dict[str, Any]:
    """Index the finished chain into SQLite, then time the tip's lineage page and the last round's page."""
    from ledger.api.app import create_app
    from ledger.api.server import serve_in_thread
    from ledger.chain.connect import connect
    from ledger.index import queries
    from ledger.index.db import make_engine, session_factory, transaction, upgrade
    from ledger.index.indexer import Indexer

    with tempfile.TemporaryDirectory(prefix="fedledger-bench-scale-index-") as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'index.sqlite'}")
        try:
            upgrade(engine)
            sessions = session_factory(engine)
            stats = Indexer(connect(rpc_url), address, sessions, store=store).run_once()
            with transaction(sessions) as session:
                tip = queries.latest_version(session)
                assert tip is not None
                tip_hash, last_round = tip.model_hash, tip.round
            app = create_app(store=store, ledger=None, max_blob_bytes=1 << 20, index_sessions=sessions)
            with serve_in_thread(app, threads=4) as server:
                lineage = http_latency(server.host, server.port, f"/api/v1/models/{tip_hash}/lineage", requests=requests)
                round_page = http_latency(server.host, server.port, f"/api/v1/rounds/{last_round}", requests=requests)
        finally:
            engine.dispose()
    return {
        "indexed_events": stats.events,
        "index_seconds": round(stats.seconds, 3),
        "lineage": lineage.summary(label="/api/v1/models/<tip>/lineage"),
        "round_page": round_page.summary(label="/api/v1/rounds/<last>"),
    }


def _nodes_report(
    nodes: int,
    bad: int,
    drivers: int,
    threads: int,
    stages: dict[str, float],
    per_round: list[dict[str, Any]],
    api: dict[str, Any],
) -> dict[str, Any]:
    warmup = 1 if len(per_round) > 1 else 0
    for index, figures in enumerate(per_round):
        figures["warmup"] = index < warmup
    measured = per_round[warmup:]

    def med(*path: str) -> float:
        values = []
        for figures in measured:
            value: Any = figures
            for key in path:
                value = value[key]
            values.append(value)
        return median(values)

    return rounded(
        {
            "nodes": nodes,
            "bad_nodes": bad,
            "drivers": drivers,
            "threads_per_driver": threads,
            "rounds": len(per_round),
            "warmup_rounds": warmup,
            "stage_seconds": stages,
            "median": {
                "submissions_per_second": med("submissions_per_second"),
                "last_submission_to_finalize_seconds": med("last_submission_to_finalize_seconds"),
                "phases": {name: med("phases", name) for name in per_round[0]["phases"]},
                "intake_work_seconds": {name: med("intake_work_seconds", name) for name in per_round[0]["intake_work_seconds"]},
                "rejections_seconds": med("rejections_seconds"),
                "cpu_seconds": {role: med("cpu_seconds", role) for role in per_round[0]["cpu_seconds"]},
                "aggregator_peak_rss_mib": med("aggregator_rss_mib", "peak_in_round")
                if per_round[0]["aggregator_rss_mib"]["peak_in_round"] is not None
                else None,
                "gas_per_round": med("gas", "round_total"),
            },
            "per_round": per_round,
            "api": api,
        }
    )


# ---------------------------------------------------------------------------------- command


def measure_scale(
    *,
    nodes: Sequence[int] = NODES,
    rounds: int = ROUNDS,
    drivers: int = DRIVERS,
    threads: int = THREADS_PER_DRIVER,
    reject_every: int = REJECT_EVERY,
    api_requests: int = API_REQUESTS,
    history_rounds: int,
    history_nodes: int,
    databases: Sequence[str],
    time_limit: float = TIME_LIMIT_SECONDS,
    rule: str = DEFAULT_RULE,
) -> dict[str, Any]:
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    started = time.monotonic()
    load_before = os.getloadavg()
    by_nodes = [
        measure_nodes(n, rounds=rounds, drivers=drivers, threads=threads, reject_every=reject_every, api_requests=api_requests, rule=rule)
        for n in nodes
    ]
    history = None
    if history_rounds > 0:
        from ledger.cli.bench.history import measure_history

        history = measure_history(
            rounds=history_rounds, nodes=history_nodes, databases=databases, api_requests=api_requests
        )
    elapsed = time.monotonic() - started
    largest = by_nodes[-1]
    targets = {
        "last_submission_to_finalize_seconds_max": LAST_TO_FINALIZE_TARGET_SECONDS,
        "time_limit_seconds": time_limit,
    }
    checks = {
        "last_submission_to_finalize": all(
            r["median"]["last_submission_to_finalize_seconds"] <= LAST_TO_FINALIZE_TARGET_SECONDS for r in by_nodes
        ),
        "within_time_limit": elapsed <= time_limit,
    }
    if history is not None:
        checks["history_api_latency"] = history["meets_targets"]
    return {
        "benchmark": "scale",
        "chain": "anvil (throwaway per node count, automine, block gas limit 1e9)",
        "execution": (
            "ledger service (blob store, uvicorn + a2wsgi, 8 threads) in this process; the real Aggregator in its own "
            f"process; {drivers} driver processes x {threads} threads playing the nodes (each node: own key, signed "
            "upload of a real update blob, own submitUpdate); a fresh anvil, service and processes per node count"
        ),
        "cpus": os.cpu_count(),
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "reject_every": reject_every,
        "rule": rule,
        "by_nodes": by_nodes,
        "table": [
            {
                "nodes": r["nodes"],
                "submissions_per_second": r["median"]["submissions_per_second"],
                "last_submission_to_finalize_seconds": r["median"]["last_submission_to_finalize_seconds"],
                "aggregator_peak_rss_mib": r["median"]["aggregator_peak_rss_mib"],
                "gas_per_round": r["median"]["gas_per_round"],
                "lineage_p99_ms": r["api"]["lineage"]["p99_ms"],
                "round_page_p99_ms": r["api"]["round_page"]["p99_ms"],
                "end_to_end_seconds": r["stage_seconds"]["end_to_end"],
            }
            for r in by_nodes
        ],
        "history": history,
        "elapsed_seconds": round(elapsed, 1),
        "largest_nodes": largest["nodes"],
        "targets": targets,
        "checks": checks,
        "meets_targets": all(checks.values()),
    }


def add_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scale", help="rounds of 10/100/1,000 nodes on anvil by phase, and the index + API at 100,000 updates"
    )
    parser.add_argument("--nodes", type=parse_counts, default=list(NODES), help="node counts, comma-separated (default 10,100,1000)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds per node count (default {ROUNDS})")
    parser.add_argument("--drivers", type=int, default=DRIVERS, help=f"driver processes playing the nodes (default {DRIVERS})")
    parser.add_argument("--threads", type=int, default=THREADS_PER_DRIVER, help=f"nodes in flight per driver (default {THREADS_PER_DRIVER})")
    parser.add_argument("--reject-every", type=int, default=REJECT_EVERY, help=f"every Nth node sends NaNs; 0: none (default {REJECT_EVERY})")
    parser.add_argument("--api-requests", type=int, default=API_REQUESTS, help=f"requests per API latency case (default {API_REQUESTS})")
    parser.add_argument("--history-rounds", type=int, default=1000, help="rounds of the long history; 0 skips it (default 1000)")
    parser.add_argument("--history-nodes", type=int, default=100, help="updates per round of the long history (default 100)")
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="index databases for the long history (default sqlite,postgresql)"
    )
    parser.add_argument("--rule", default=DEFAULT_RULE, help=f"the aggregator's rule, with its default parameters (default {DEFAULT_RULE})")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT_SECONDS, help="seconds the whole run may take")
    add_output_arguments(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ledger.cli.errors import UsageError

    databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    unknown = sorted(set(databases) - {"sqlite", "postgresql"})
    if unknown:
        raise UsageError(f"--databases takes sqlite and/or postgresql, not {', '.join(unknown)}")
    from ledger.core.aggregation import RULES

    if args.rule not in RULES:
        raise UsageError(f"unknown aggregation rule {args.rule!r}; known: {', '.join(sorted(RULES))}")
    report = measure_scale(
        nodes=args.nodes,
        rounds=args.rounds,
        drivers=args.drivers,
        threads=args.threads,
        reject_every=args.reject_every,
        api_requests=args.api_requests,
        history_rounds=args.history_rounds,
        history_nodes=args.history_nodes,
        databases=databases,
        time_limit=args.time_limit,
        rule=args.rule,
    )
    emit(report, as_json=args.json)
    return 0 if report["meets_targets"] else 1
