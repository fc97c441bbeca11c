"""`fedledger bench round`: federated rounds at 10 nodes on a real anvil devnet, split by phase.

Starts anvil on a free port in a temporary folder, deploys a fresh ledger (no deployment record
is written), registers 10 dev accounts as nodes, serves the blob store over HTTP
(`serve_in_thread`, in this process), runs the real `Aggregator` in this process and 10 real
`EdgeNode`s as separate OS processes woken by new blocks, as `fedledger node run` is.
Everything is stopped at the end, on error too.

A round's wall time (the aggregator's `open_round` call to the `finalizeRound` receipt) is split
along its critical path: the aggregator's own steps, plus the steps of the node whose submission
landed last (the one the round waited for). Phases:

- training: that node's local training;
- chain: transactions (send + receipt) and contract reads;
- hashing/storage: serialize, upload, download, re-hash (and validate: the same pass);
- waiting: the node noticing the round, the aggregator noticing the last submission after it
  landed (both woken by the chain's new-head notifications);
- aggregation: the merge's result and the test-set evaluation.

The ledger's share is chain + hashing/storage + waiting. Like `ledger.cli.demo`, this module is a
composition root: it imports both `aggregator` and `edge_node`, which never import each other.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.cli.bench.common import add_output_arguments, emit, median, process_cpu_seconds, rounded, stop_processes
from ledger.core.polling import free_port

NODES = 10
ROUNDS = 5
WARMUP_ROUNDS = 1  # first-use costs (torch's first backward pass, connection pools) are not a round's
EPOCHS = 5
PHASES = ("training", "chain", "hashing_storage", "waiting", "aggregation")
LEDGER_SHARE_TARGET = 0.3  # seconds per round on the critical path (issue 15, on a quiet machine)
ROUND_TARGET = 0.4  # median wall time of a round, same conditions
PROCESS_START_TIMEOUT = 300.0
ROUND_TIMEOUT = 300.0


@dataclass(frozen=True)
class NodeRound:
    """One node's part in one round, timed in its own process (`time.monotonic` is system-wide)."""

    node: int
    round: int
    outcome: str
    seen: float  # when the node noticed the round
    done: float  # when its submission's receipt came back
    train_seconds: float
    store_seconds: float  # base fetch + re-hash, serialize + upload
    chain_seconds: float  # submitUpdate: send + receipt
    cpu_seconds: float  # this process's CPU since its previous report (waiting included)


@dataclass(frozen=True)
class NodeFailed:
    node: int
    error: str


# ---------------------------------------------------------------------------------- node processes


def _node_process(
    index: int,
    nodes: int,
    rpc_url: str,
    address: str,
    store_url: str,
    epochs: int,
    reports: Any,
    stop: Any,
) -> None:
    """An edge node in its own process: `fedledger node run`'s loop, reporting each round's timings.

    It runs until `stop` is set, so no process exits (and burns CPU tearing down) mid-round.
    """
    try:
        from edge_node.node import EdgeNode, TrainingConfig
        from ledger.chain import events
        from ledger.chain.client import LedgerClient
        from ledger.chain.connect import connect
        from ledger.chain.devkeys import dev_account
        from ledger.chain.follow import LedgerFollower, of_type
        from ledger.config import Settings
        from ledger.core.heap import freeze_heap
        from ledger.core.threads import DEFAULT_THREADS, pin_threads
        from ledger.tasks.digits import DIGITS_MLP
        from ledger.tasks.partition import split_examples
        from ledger.store.http import HttpBlobStore

        pin_threads(DEFAULT_THREADS)  # what `fedledger node run` pins by default
        account = dev_account(index + 1)
        client = LedgerClient(connect(rpc_url), address, account)
        settings = Settings()
        store = HttpBlobStore.from_ledger(store_url, client, account=account, max_bytes=settings.max_blob_bytes)
        shard = split_examples(DIGITS_MLP.bundled_data().train, nodes, iid=True, alpha=0.5, seed=0)[index]
        config = TrainingConfig(task=DIGITS_MLP, hyperparameters={"epochs": epochs}, seed=index)
        node = EdgeNode(client, store, shard, config, max_model_bytes=settings.max_blob_bytes)
        node.warm_up()
        follower = LedgerFollower.from_head(client.w3, address)
        freeze_heap()  # as `fedledger node run` does once started
        reports.put(("ready", index))
        cpu_mark = time.process_time()
        while not stop.is_set():
            for opened in of_type(follower.wait(timeout=0.5), events.RoundOpened):
                seen = time.monotonic()
                result = node.participate(opened.round)
                done = time.monotonic()
                reports.put(
                    NodeRound(
                        node=index,
                        round=opened.round,
                        outcome=result.outcome.value,
                        seen=seen,
                        done=done,
                        train_seconds=result.train_seconds,
                        store_seconds=result.store_seconds,
                        chain_seconds=result.chain_seconds,
                        cpu_seconds=time.process_time() - cpu_mark,
                    )
                )
                cpu_mark = time.process_time()
    except BaseException:
        reports.put(NodeFailed(index, traceback.format_exc()))
        raise


# ---------------------------------------------------------------------------------- one round


def critical_path(
    *,
    opened_at: float,
    open_returned_at: float,
    submissions_seen_at: float,
    closed_at: float,
    close_timings: dict[str, float],
    last: NodeRound,
) -> dict[str, float]:
    """Seconds per phase along the round's critical path (see the module docstring)."""
    # The open transaction is on the path until the last node noticed the round (it may notice
    # before `open_round` has finished reading the round back).
    node_noticed = max(last.seen, opened_at)
    open_chain = min(open_returned_at, node_noticed) - opened_at
    node_wait = max(0.0, node_noticed - open_returned_at)
    node_total = last.done - last.seen
    node_reads = max(0.0, node_total - last.train_seconds - last.store_seconds - last.chain_seconds)
    aggregator_wait = max(0.0, submissions_seen_at - last.done)
    close_total = closed_at - submissions_seen_at
    close_known = sum(close_timings.get(key, 0.0) for key in ("verify", "chain", "aggregate", "store"))
    phases = {
        "training": last.train_seconds,
        "chain": open_chain
        + node_reads
        + last.chain_seconds
        + close_timings.get("chain", 0.0)
        + max(0.0, close_total - close_known),  # close_round's own reads (get_round)
        "hashing_storage": last.store_seconds + close_timings.get("verify", 0.0) + close_timings.get("store", 0.0),
        "waiting": node_wait + aggregator_wait + close_timings.get("wait_deadline", 0.0),
        "aggregation": close_timings.get("aggregate", 0.0),
    }
    phases["ledger_share"] = phases["chain"] + phases["hashing_storage"] + phases["waiting"]
    phases["sum_of_phases"] = sum(phases[key] for key in PHASES)
    return phases


def _collect(reports: Any, round_number: int, nodes: int, pending: dict[int, list[NodeRound]]) -> list[NodeRound]:
    """The `nodes` reports of `round_number` (reports of other rounds are kept for later)."""
    deadline = time.monotonic() + ROUND_TIMEOUT
    while len(pending.get(round_number, [])) < nodes:
        try:
            report = reports.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            received = len(pending.get(round_number, []))
            raise TimeoutError(f"round {round_number}: only {received} of {nodes} node reports") from None
        if isinstance(report, NodeFailed):
            raise RuntimeError(f"node {report.node} failed:\n{report.error}")
        if isinstance(report, NodeRound):
            pending.setdefault(report.round, []).append(report)
    return pending.pop(round_number)


def measure_round(*, nodes: int = NODES, rounds: int = ROUNDS, epochs: int = EPOCHS) -> dict[str, Any]:
    from aggregator.coordinator import Aggregator, AggregatorConfig
    from ledger.api.app import create_app
    from ledger.api.server import DEFAULT_THREADS, serve_in_thread
    from ledger.chain.connect import connect
    from ledger.chain.client import LedgerClient
    from ledger.config import Settings
    from ledger.core.heap import freeze_heap
    from ledger.tasks.digits import DIGITS_MLP
    from ledger.chain.devkeys import DEV_ACCOUNT_COUNT, dev_account
    from ledger.chain.devnet import Devnet
    from ledger.store.http import HttpBlobStore
    from ledger.store.local import LocalBlobStore

    if not 1 <= nodes < DEV_ACCOUNT_COUNT or rounds < 1:
        raise ValueError(f"nodes must be in 1..{DEV_ACCOUNT_COUNT - 1} and rounds at least 1")
    settings = Settings()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fedledger-bench-round-") as tmp:
        devnet = Devnet(port=free_port(), state_dir=Path(tmp) / "devnet")
        server = None
        processes: list[multiprocessing.process.BaseProcess] = []
        try:
            devnet.start()
            w3 = connect(devnet.rpc_url)
            admin, _ = LedgerClient.deploy(w3, dev_account(0))
            for index in range(nodes):
                admin.register_node(dev_account(index + 1).address)
            app = create_app(
                store=LocalBlobStore(Path(tmp) / "blobs", settings.max_blob_bytes),
                ledger=LedgerClient(connect(devnet.rpc_url), admin.address),
                max_blob_bytes=settings.max_blob_bytes,
            )
            server = serve_in_thread(app, threads=DEFAULT_THREADS)
            store = HttpBlobStore.from_ledger(
                server.url, admin, account=dev_account(0), max_bytes=settings.max_blob_bytes
            )
            config = AggregatorConfig(
                task=DIGITS_MLP, hyperparameters={"epochs": epochs}, min_updates=nodes, round_seconds=int(ROUND_TIMEOUT)
            )
            aggregator = Aggregator(admin, store, DIGITS_MLP.bundled_data().test, config)
            aggregator.ensure_genesis()

            context = multiprocessing.get_context("spawn")
            reports = context.Queue()
            stop = context.Event()
            for index in range(nodes):
                process = context.Process(
                    target=_node_process,
                    args=(index, nodes, devnet.rpc_url, admin.address, server.url, epochs, reports, stop),
                    name=f"bench-node-{index}",
                    daemon=True,
                )
                process.start()
                processes.append(process)
            _wait_ready(reports, nodes)
            freeze_heap()  # as `fedledger aggregator run` and `fedledger api serve` do once started

            per_round = []
            pending: dict[int, list[NodeRound]] = {}
            anvil_pid = devnet.pid()
            for _ in range(WARMUP_ROUNDS + rounds):
                cpu_before = (time.process_time(), process_cpu_seconds(anvil_pid))
                opened_at = time.monotonic()
                info = aggregator.open_round()
                open_returned_at = time.monotonic()
                result = aggregator.close_round(info.round)
                closed_at = time.monotonic()
                submissions_seen_at = open_returned_at + result.timings["wait_submissions"]
                cpu_after = (time.process_time(), process_cpu_seconds(anvil_pid))
                if not result.committed or len(result.included) != nodes:
                    raise RuntimeError(f"round {info.round} did not commit all {nodes} updates: {result}")
                node_rounds = _collect(reports, info.round, nodes, pending)
                last = max(node_rounds, key=lambda report: report.done)
                phases = critical_path(
                    opened_at=opened_at,
                    open_returned_at=open_returned_at,
                    submissions_seen_at=submissions_seen_at,
                    closed_at=closed_at,
                    close_timings=dict(result.timings),
                    last=last,
                )
                per_round.append(
                    {
                        "round": info.round,
                        "wall_seconds": closed_at - opened_at,
                        "critical_path": phases,
                        "aggregator": {
                            "open_round": open_returned_at - opened_at,
                            **{f"close_{key}": value for key, value in result.timings.items()},
                        },
                        "nodes_median": {
                            "train_seconds": median([r.train_seconds for r in node_rounds]),
                            "store_seconds": median([r.store_seconds for r in node_rounds]),
                            "chain_seconds": median([r.chain_seconds for r in node_rounds]),
                        },
                        "last_node": {
                            "node": last.node,
                            "train_seconds": last.train_seconds,
                            "store_seconds": last.store_seconds,
                            "chain_seconds": last.chain_seconds,
                        },
                        "accuracy": result.accuracy,
                        "cpu_seconds": {
                            "aggregator_and_blob_service": cpu_after[0] - cpu_before[0],
                            "nodes_total": sum(r.cpu_seconds for r in node_rounds),
                            "anvil": cpu_after[1] - cpu_before[1]
                            if cpu_after[1] is not None and cpu_before[1] is not None
                            else None,
                        },
                    }
                )
        finally:
            try:
                stop_processes(processes, stop if processes else None)
            finally:
                try:
                    if server is not None:
                        server.close()
                finally:
                    devnet.stop()

    return _report(per_round, nodes=nodes, rounds=rounds, epochs=epochs, load_before=load_before)


def _wait_ready(reports: Any, nodes: int) -> None:
    ready: set[int] = set()
    deadline = time.monotonic() + PROCESS_START_TIMEOUT
    while len(ready) < nodes:
        try:
            report = reports.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"only {len(ready)} of {nodes} node processes started") from None
        if isinstance(report, NodeFailed):
            raise RuntimeError(f"node {report.node} failed to start:\n{report.error}")
        ready.add(report[1])


def _report(
    per_round: list[dict[str, Any]], *, nodes: int, rounds: int, epochs: int, load_before: tuple[float, ...]
) -> dict[str, Any]:
    phase_names = (*PHASES, "ledger_share", "sum_of_phases")
    warmup, measured = per_round[:WARMUP_ROUNDS], per_round[WARMUP_ROUNDS:]
    medians = {name: median([r["critical_path"][name] for r in measured]) for name in phase_names}
    wall_median = median([r["wall_seconds"] for r in measured])
    ledger_share = medians["ledger_share"]
    return {
        "benchmark": "round",
        "chain": "anvil devnet (automine), fresh deployment",
        "execution": (
            "aggregator and HTTP blob service (uvicorn + a2wsgi threads) in this process; each edge node a "
            "separate OS process (multiprocessing spawn, the default torch threads of `fedledger node run`) "
            "woken by each new block (newHeads subscription) like `fedledger node run`"
        ),
        "nodes": nodes,
        "rounds": rounds,
        "epochs": epochs,
        "cpus": os.cpu_count(),
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "warmup_rounds": WARMUP_ROUNDS,
        "wall_seconds_median": round(wall_median, 4),
        "critical_path_median": rounded(medians),
        "per_round": [
            {
                "round": r["round"],
                "wall_seconds": round(r["wall_seconds"], 4),
                "critical_path": rounded(r["critical_path"]),
                "aggregator": rounded(r["aggregator"]),
                "nodes_median": rounded(r["nodes_median"]),
                "last_node": rounded(r["last_node"]),
                "cpu_seconds": rounded(r["cpu_seconds"]),
                "accuracy": r["accuracy"],
                "warmup": r in warmup,
            }
            for r in per_round
        ],
        "notes": (
            "Critical path = the aggregator's steps + the steps of the node whose submission landed last. "
            "chain = transactions (send + receipt) and contract reads; hashing_storage = serialize, upload, "
            "download, re-hash, validate; waiting = the last node noticing the round + the aggregator "
            "noticing the last submission; aggregation = merge result + test-set evaluation. "
            "ledger_share = chain + hashing_storage + waiting. Medians over the rounds after the warm-up "
            "round(s). Times from time.monotonic (system-wide)."
        ),
        "target": {"ledger_share_seconds_max": LEDGER_SHARE_TARGET, "round_seconds_max": ROUND_TARGET},
        "meets_target": ledger_share <= LEDGER_SHARE_TARGET and wall_median <= ROUND_TARGET,
    }


def add_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("round", help="wall time of a federated round at 10 nodes on anvil, by phase")
    parser.add_argument("--nodes", type=int, default=NODES)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    add_output_arguments(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    report = measure_round(nodes=args.nodes, rounds=args.rounds, epochs=args.epochs)
    emit(report, as_json=args.json)
    return 0 if report["meets_target"] else 1
