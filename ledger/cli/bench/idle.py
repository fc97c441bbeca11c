"""`fedledger bench idle`: what a federation at rest costs the chain, and what one wait costs as history grows.

1. **An idle federation.** A devnet (with its persister), a fresh ledger, 100 registered nodes and
   an aggregator waiting in an open round for submissions that never come. The nodes are
   lightweight followers, several per process (threads), each running `fedledger node run`'s
   waiting loop (`ledger.chain.follow`: a newHeads subscription, a state re-check every
   `RECHECK_SECONDS`); the aggregator is the real `Aggregator.close_round`. anvil's CPU is read
   from /proc over a window, once with subscriptions and once with the polling fallback
   (`eth_blockNumber` every 100 ms, what an endpoint without WebSocket gets).
2. **One wait as history grows.** At 200 and at 10,000 blocks of history, the cost of one wake of a
   follower (a new block: `eth_blockNumber`, then `eth_getLogs` over the new range only), beside
   the cost of the reads the roles made before (`eth_getLogs` over the ledger's whole history).
3. **The devnet's persistence.** At 10,000 and 50,000 blocks: what one state dump costs, so what
   anvil's own `--state-interval 1` would cost per second, against the persister's pace (a dump
   only after the chain moved, at most `CPU_SHARE` of a core), its CPU at rest, and the blocks a
   kill -9 loses (measured: blocks mined at a steady pace, anvil killed, restarted, counted).

History is grown with `anvil_mine` (empty blocks) around the ledger's own transactions.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ledger.cli.bench.common import add_output_arguments, emit, median
from ledger.core.polling import free_port

NODES = 100
PROCESSES = 4
WINDOW_SECONDS = 20.0
HISTORIES = (200, 10_000)
PERSISTED_HISTORIES = (10_000, 50_000)
WAKES = 100
IDLE_TARGET = 0.05  # anvil's share of one core with 100 idle nodes and a waiting aggregator


# ---------------------------------------------------------------------------------- followers


def _followers(rpc_url: str, address: str, count: int, websocket: bool, ready: Any, stop: Any) -> None:
    """`count` idle nodes in this process, one thread each, waiting as `fedledger node run` waits."""
    from ledger.chain.client import LedgerClient
    from ledger.chain.connect import connect
    from ledger.chain.follow import LedgerFollower, NewHeads
    from ledger.cli.node import RECHECK_SECONDS

    def follow() -> None:
        w3 = connect(rpc_url)
        client = LedgerClient(w3, address)
        follower = LedgerFollower.from_head(w3, address, heads=NewHeads(w3, websocket=websocket))
        ready.put(1)
        recheck_at = time.monotonic() + RECHECK_SECONDS
        while not stop.is_set():
            follower.wait(timeout=min(1.0, max(0.0, recheck_at - time.monotonic())))
            if time.monotonic() >= recheck_at:
                client.counters()
                recheck_at = time.monotonic() + RECHECK_SECONDS
        follower.close()

    threads = [threading.Thread(target=follow, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _cpu_seconds(pid: int | None) -> float:
    from ledger.cli.bench.common import process_cpu_seconds

    seconds = process_cpu_seconds(pid)
    return seconds if seconds is not None else float("nan")


def _idle_federation(nodes: int, processes: int, window: float) -> dict[str, Any]:
    from aggregator.coordinator import Aggregator, AggregatorConfig
    from ledger.chain.client import LedgerClient
    from ledger.chain.connect import connect
    from ledger.chain.devkeys import dev_account
    from ledger.chain.devnet import Devnet
    from ledger.store.local import LocalBlobStore
    from ledger.tasks.digits import DIGITS_MLP
    from eth_account import Account

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedledger-bench-idle-") as tmp:
        devnet = Devnet(port=free_port(), state_dir=Path(tmp) / "devnet")
        devnet.start()
        try:
            w3 = connect(devnet.rpc_url)
            admin, _ = LedgerClient.deploy(w3, dev_account(0))
            for _ in range(nodes):
                admin.register_node(Account.create().address)
            # Its own connection, with no patience: once the devnet is stopped at the end, it just stops.
            aggregator = Aggregator(
                LedgerClient(connect(devnet.rpc_url, patience=0.5), admin.address, dev_account(0)),
                LocalBlobStore(Path(tmp) / "blobs", 1 << 26),
                DIGITS_MLP.bundled_data().test,
                AggregatorConfig(round_seconds=3600, min_updates=1),
            )
            aggregator.ensure_genesis()
            info = aggregator.open_round()
            waiting = threading.Thread(target=_close_quietly, args=(aggregator, info.round), daemon=True)
            waiting.start()  # waits for 100 submissions that never come
            for mode, websocket in (("subscription", True), ("polling_fallback", False)):
                results[mode] = _measure_window(devnet, admin.address, nodes, processes, window, websocket)
        finally:
            devnet.stop()
    return results


def _close_quietly(aggregator: Any, round_number: int) -> None:
    try:
        aggregator.close_round(round_number)
    except Exception:  # the devnet is stopped under it at the end
        pass


def _measure_window(devnet: Any, address: str, nodes: int, processes: int, window: float, websocket: bool) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    per_process = [nodes // processes + (1 if index < nodes % processes else 0) for index in range(processes)]
    workers = [
        context.Process(target=_followers, args=(devnet.rpc_url, address, count, websocket, ready, stop), daemon=True)
        for count in per_process
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in range(nodes):
            ready.get(timeout=300)
        time.sleep(2.0)  # let start-up settle: the window measures rest, not arrival
        anvil = devnet.pid()
        before = (time.monotonic(), _cpu_seconds(anvil), sum(_cpu_seconds(w.pid) for w in workers))
        time.sleep(window)  # the measured window: nothing happens on purpose
        after = (time.monotonic(), _cpu_seconds(anvil), sum(_cpu_seconds(w.pid) for w in workers))
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.terminate()
    elapsed = after[0] - before[0]
    return {
        "anvil_core_share": round((after[1] - before[1]) / elapsed, 4),
        "followers_core_share": round((after[2] - before[2]) / elapsed, 4),
        "window_seconds": round(elapsed, 1),
    }


# ---------------------------------------------------------------------------------- history


def _per_wake_cost(histories: tuple[int, ...], wakes: int) -> dict[str, Any]:
    from ledger.chain.client import LedgerClient
    from ledger.chain.connect import connect
    from ledger.chain.devkeys import dev_account
    from ledger.chain.devnet import rpc_call, throwaway_devnet
    from ledger.chain.follow import LedgerFollower
    from ledger.chain.rounds import active_nodes

    results: dict[str, Any] = {}
    with throwaway_devnet() as devnet:
        w3 = connect(devnet.rpc_url)
        admin, _ = LedgerClient.deploy(w3, dev_account(0))
        admin.register_node(dev_account(1).address)
        anvil = devnet.pid()
        for history in histories:
            head = int(w3.eth.block_number)
            if history > head:
                rpc_call(devnet.rpc_url, "anvil_mine", [hex(history - head)], timeout=600)
            follower = LedgerFollower.from_head(w3, admin.address)
            for _ in range(wakes):  # blocks with a ledger event each, as a round brings
                admin.register_node(_fresh_address())
            wake_wall, full_wall = [], []
            cpu = _cpu_seconds(anvil)
            for _ in range(wakes):  # a follower's wake: the head, then the logs of one new block
                started = time.perf_counter()
                follower.heads.head()
                follower.read_to(follower.cursor + 1)
                wake_wall.append(time.perf_counter() - started)
            wake_cpu = _cpu_seconds(anvil) - cpu
            cpu = _cpu_seconds(anvil)
            for _ in range(wakes):
                started = time.perf_counter()
                active_nodes(admin)  # the whole-history read each poll used to make
                full_wall.append(time.perf_counter() - started)
            full_cpu = _cpu_seconds(anvil) - cpu
            results[str(history)] = {
                "blocks": int(w3.eth.block_number),
                "wake_ms_median": round(1000 * median(wake_wall), 3),
                "wake_anvil_cpu_ms_mean": round(1000 * wake_cpu / wakes, 3),
                "whole_history_read_ms_median": round(1000 * median(full_wall), 3),
                "whole_history_anvil_cpu_ms_mean": round(1000 * full_cpu / wakes, 3),
            }
    return results


def _fresh_address() -> str:
    from eth_account import Account

    return str(Account.create().address)


# ---------------------------------------------------------------------------------- persistence


def _persistence(histories: tuple[int, ...], rest_seconds: float) -> dict[str, Any]:
    from ledger.chain.connect import connect
    from ledger.chain.devkeys import dev_account
    from ledger.chain.devnet import Devnet, rpc_call
    from ledger.chain.persist import CPU_SHARE, MIN_INTERVAL_SECONDS

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedledger-bench-persist-") as tmp:
        devnet = Devnet(port=free_port(), state_dir=Path(tmp) / "devnet")
        devnet.start()
        try:
            w3 = connect(devnet.rpc_url)
            for history in histories:
                head = int(w3.eth.block_number)
                rpc_call(devnet.rpc_url, "anvil_mine", [hex(history - head)], timeout=600)
                started = time.perf_counter()
                rpc_call(devnet.rpc_url, "anvil_dumpState", [], timeout=600)
                dump_seconds = time.perf_counter() - started
                devnet.wait_persisted(history, timeout=600)
                persister = _persister_pid(devnet)
                cpu = (_cpu_seconds(devnet.pid()), _cpu_seconds(persister), time.monotonic())
                time.sleep(rest_seconds)
                rest = (_cpu_seconds(devnet.pid()), _cpu_seconds(persister), time.monotonic())
                lost = _kill_9_loss(devnet, w3)
                w3 = connect(devnet.rpc_url)
                results[str(history)] = {
                    "dump_seconds": round(dump_seconds, 3),
                    "state_interval_1_core_share": round(min(dump_seconds, 1.0), 3),
                    "persister_interval_seconds": round(max(MIN_INTERVAL_SECONDS, dump_seconds / CPU_SHARE), 2),
                    "at_rest_core_share": {
                        "anvil": round((rest[0] - cpu[0]) / (rest[2] - cpu[2]), 4),
                        "persister": round((rest[1] - cpu[1]) / (rest[2] - cpu[2]), 4),
                    },
                    "kill_9": lost,
                }
        finally:
            devnet.stop()
    return results


def _persister_pid(devnet: Any) -> int | None:
    try:
        return int(devnet.persister_pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _kill_9_loss(devnet: Any, w3: Any, seconds: float = 10.0, pace: float = 0.1) -> dict[str, Any]:
    """Mine a block every `pace` s for `seconds`, kill -9 anvil, restart: how many blocks came back."""
    from ledger.chain.devnet import rpc_call

    finish = time.monotonic() + seconds
    while time.monotonic() < finish:
        rpc_call(devnet.rpc_url, "evm_mine", [])
        time.sleep(pace)
    head = int(rpc_call(devnet.rpc_url, "eth_blockNumber"), 16)
    devnet.kill_hard()
    devnet.start(timeout=600)
    restored = int(rpc_call(devnet.rpc_url, "eth_blockNumber"), 16)
    return {"head_at_kill": head, "head_after_restart": restored, "blocks_lost": head - restored, "mined_per_second": round(1 / pace, 1)}


# ---------------------------------------------------------------------------------- the bench


def measure_idle(
    *, nodes: int = NODES, processes: int = PROCESSES, window: float = WINDOW_SECONDS, wakes: int = WAKES,
    histories: tuple[int, ...] = HISTORIES, persisted: tuple[int, ...] = PERSISTED_HISTORIES,
) -> dict[str, Any]:  # fmt: skip
    load_before = os.getloadavg()
    federation = _idle_federation(nodes, processes, window)
    wakes_by_history = _per_wake_cost(histories, wakes)
    persistence = _persistence(persisted, rest_seconds=min(window, 10.0)) if persisted else {}
    share = federation["subscription"]["anvil_core_share"]
    return {
        "benchmark": "idle",
        "nodes": nodes,
        "follower_processes": processes,
        "cpus": os.cpu_count(),
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "idle_federation": federation,
        "per_wake_by_history": wakes_by_history,
        "persistence_by_history": persistence,
        "notes": (
            "idle_federation: anvil's CPU (share of one core) over a window with `nodes` idle followers "
            "(threads in `follower_processes` processes, each waiting like `fedledger node run`) and the real "
            "aggregator waiting in an open round; subscription = newHeads over WebSocket, polling_fallback = "
            "eth_blockNumber every 100 ms. per_wake_by_history: one follower wake (eth_blockNumber + eth_getLogs "
            "over the new block) against a whole-history read, at each history length (anvil_mine blocks). "
            "persistence_by_history: one anvil_dumpState at that length; state_interval_1_core_share = what "
            "`--state-interval 1` costs (one dump per second); the persister dumps only after the chain moved, "
            "at most every persister_interval_seconds; kill_9 = blocks lost when anvil is killed while mining."
        ),
        "target": {"idle_anvil_core_share_max": IDLE_TARGET},
        "meets_target": share <= IDLE_TARGET,
    }


def add_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("idle", help="anvil's CPU with 100 idle nodes; one wait's cost at 200 and 10,000 blocks")
    parser.add_argument("--nodes", type=int, default=NODES)
    parser.add_argument("--processes", type=int, default=PROCESSES, help="processes the idle nodes are spread over")
    parser.add_argument("--window", type=float, default=WINDOW_SECONDS, help="seconds of rest measured")
    parser.add_argument("--no-persistence", action="store_true", help="skip the devnet persistence part")
    add_output_arguments(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    report = measure_idle(
        nodes=args.nodes,
        processes=args.processes,
        window=args.window,
        persisted=() if args.no_persistence else PERSISTED_HISTORIES,
    )
    emit(report, as_json=args.json)
    return 0 if report["meets_target"] else 1
