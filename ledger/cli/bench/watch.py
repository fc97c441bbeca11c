"""`fedledger bench watch`: how long an auditor's watcher takes from `ModelCommitted` to its attestation.

On a throwaway anvil, an honest aggregator (this process) runs rounds in which 5, then 50, nodes
submit an update of the real model's shape (a crafted change of the base: no training, so the
figure is the auditor's, not the nodes'); one `Watcher` follows the chain in a thread, polling
every `--poll-seconds`. Per version: the time from the `finalizeRound` receipt to the
`attestVersion` receipt, and the re-derivation's share of it. Medians over `--rounds` rounds.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ledger.cli.bench.common import add_output_arguments, emit, median

NODE_COUNTS = (5, 50)
ROUNDS = 5
POLL_SECONDS = 0.1
TIMEOUT = 120.0


def measure_watch(*, node_counts: tuple[int, ...] = NODE_COUNTS, rounds: int = ROUNDS, poll_seconds: float = POLL_SECONDS) -> dict[str, Any]:
    from aggregator.coordinator import Aggregator, AggregatorConfig
    from ledger.audit.watch import Attested, WatchConfig, Watcher
    from ledger.chain.client import LedgerClient
    from ledger.chain.connect import connect
    from ledger.chain.devkeys import dev_account
    from ledger.chain.devnet import rpc_call, throwaway_devnet
    from ledger.chain.inprocess import deterministic_account
    from ledger.cli.bench.synthetic import moved_update
    from ledger.tasks.digits import DIGITS_MLP
    from ledger.core.polling import poll_until
    from ledger.core.serialization import deserialize_tensors
    from ledger.store.local import LocalBlobStore
    from ledger.store.mirror import MirroredStore

    results: dict[str, Any] = {}
    test_split = DIGITS_MLP.bundled_data().test
    with throwaway_devnet(gas_limit=100_000_000) as anvil, tempfile.TemporaryDirectory(prefix="fedledger-bench-watch-") as tmp:
        w3 = connect(anvil.rpc_url)
        for count in node_counts:
            admin, _ = LedgerClient.deploy(w3, dev_account(0))
            nodes = []
            for index in range(count):
                account = deterministic_account(f"bench-watch-{count}-{index}")
                rpc_call(anvil.rpc_url, "anvil_setBalance", [account.address, hex(10**20)])
                admin.register_node(account.address)
                nodes.append(admin.as_account(account))
            auditor = admin.as_account(dev_account(1))
            admin.set_auditor(auditor.account.address, True)  # type: ignore[union-attr]
            store = LocalBlobStore(Path(tmp) / f"blobs-{count}", max_bytes=64 << 20)
            own = LocalBlobStore(Path(tmp) / f"auditor-{count}", max_bytes=64 << 20)
            aggregator = Aggregator(admin, store, test_split, AggregatorConfig(round_seconds=3600, workers=2))
            aggregator.ensure_genesis()

            attested: dict[str, tuple[float, Attested]] = {}
            watcher = Watcher(auditor, MirroredStore(own, store), config=WatchConfig(poll_seconds=poll_seconds))
            stop = threading.Event()
            thread = threading.Thread(
                target=watcher.follow, args=(stop, lambda a: attested.__setitem__(a.version.model_hash, (time.perf_counter(), a))), daemon=True
            )
            thread.start()
            latencies, rederive, blocks = [], [], []
            try:
                for _ in range(rounds):
                    info = aggregator.open_round()
                    assert info.base_model_hash is not None
                    base = deserialize_tensors(store.get(info.base_model_hash), max_bytes=64 << 20)
                    for index, node in enumerate(nodes):
                        update = store.put(moved_update(base, seed=1000 * info.round + index, norm=0.5))
                        node.submit_update(info.round, update, 100 + index)
                    result = aggregator.close_round(info.round)
                    committed_at = time.perf_counter()
                    assert result.model_hash is not None
                    model_hash = result.model_hash
                    done_at, done = poll_until(
                        lambda: attested.get(model_hash), timeout=TIMEOUT, interval=0.01, what="the watcher's attestation"
                    )
                    latencies.append(done_at - committed_at)
                    rederive.append(done.rederive_seconds)
                    if not done.verdict.ok:
                        raise RuntimeError(f"the watcher failed an honest version: {done.verdict.summary()}")
                    blocks.append(done.block_number - _commit_block(admin, model_hash))
            finally:
                stop.set()
                thread.join(timeout=30)
            results[str(count)] = {
                "rounds": rounds,
                "updates_per_version": count,
                "commit_to_attestation_seconds": round(median(latencies), 3),
                "rederive_seconds": round(median(rederive), 3),
                "blocks_after_commit": int(median(blocks)),
                "samples_seconds": [round(x, 3) for x in latencies],
            }
    return {
        "benchmark": "watch",
        "chain": "anvil (throwaway, automine)",
        "model": "the digits MLP (4,810 float32 parameters, 19 KB per blob)",
        "poll_seconds": poll_seconds,
        "how": "finalizeRound receipt → the watcher's attestVersion receipt, one watcher thread in this process",
        "by_nodes": results,
    }


def _commit_block(admin: Any, model_hash: str) -> int:
    from ledger.chain import events

    [committed] = admin.events(event_type=events.ModelCommitted, topic_filters=[None, "0x" + model_hash])
    return int(committed.ref.block_number)


def add_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("watch", help="an auditor's watcher: ModelCommitted to attestation, at 5 and 50 nodes")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds per node count (default {ROUNDS})")
    parser.add_argument("--poll-seconds", type=float, default=POLL_SECONDS, help=f"the watcher's poll interval (default {POLL_SECONDS})")
    add_output_arguments(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    emit(measure_watch(rounds=args.rounds, poll_seconds=args.poll_seconds), as_json=args.json)
    return 0
