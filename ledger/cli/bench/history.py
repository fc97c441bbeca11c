"""The long-history half of `fedledger bench scale`: the indexer and the API at 100,000 updates.

A throwaway anvil gets 1,000 rounds of 100 submissions (every 10th rejected) through
`anvil_bulk_history` (real contract calls, fake hashes). Then:

- the chain reads a coordinator makes each wake, early in that history and at its end, to show
  they do not grow with it: the reads of a round's new block (its logs, and the block's hash the
  `LedgerFollower` checks for reorgs) and a caught-up follower's read with nothing new, beside
  what one read of every event from block 0 costs (what the node count used to cost);
- per database (SQLite file, throwaway PostgreSQL): indexing the whole history with the real
  indexer, the cost of an indexer poll once caught up, and through a real HTTP server the latency
  of the tip's lineage page, of the last and the first round's page, and of the summary.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ledger.cli.bench.common import http_latency, median, rounded

GAS_LIMIT = 1_000_000_000
LINEAGE_P99_TARGET_MS = 20.0
ROUND_PAGE_P99_TARGET_MS = 50.0
READ_REPEATS = 7


def _seconds(call: Callable[[], Any], repeats: int = READ_REPEATS) -> float:
    """Median wall time of `call` over `repeats` runs."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return median(samples)


@contextmanager
def _database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'index.sqlite'}"
    else:
        from ledger.index.postgres import throwaway_postgres

        with throwaway_postgres() as url:
            yield url


def measure_history(*, rounds: int, nodes: int, databases: Sequence[str], api_requests: int) -> dict[str, Any]:
    from ledger.chain import events
    from ledger.chain.client import LedgerClient
    from ledger.chain.connect import connect
    from ledger.chain.devnet import throwaway_devnet
    from ledger.chain.follow import LedgerFollower, NewHeads
    from ledger.chain.rounds import round_opened_block
    from ledger.cli.bench.synthetic import anvil_bulk_history

    with throwaway_devnet(gas_limit=GAS_LIMIT) as anvil, tempfile.TemporaryDirectory(prefix="fedledger-bench-history-") as tmp:
        started = time.perf_counter()
        history = anvil_bulk_history(anvil.rpc_url, nodes=nodes, rounds=rounds)
        generate_seconds = time.perf_counter() - started
        w3 = connect(anvil.rpc_url)
        client = LedgerClient(w3, history.address)

        heads = NewHeads(w3, websocket=False)
        follower = LedgerFollower(w3, history.address, from_block=history.deploy_block, heads=heads)
        started = time.perf_counter()
        follower.read()
        follower_first_seconds = time.perf_counter() - started
        early, late = min(2, rounds), rounds

        def wake_in_round(round_number: int) -> Callable[[], Any]:
            """What a wake costs while the round is open: a follower standing on its opening block
            reads the next one."""
            opened = round_opened_block(client, round_number)

            def wake() -> Any:  # the same two requests as a wake on the next block: that block, its logs
                return LedgerFollower(w3, history.address, from_block=opened + 1, heads=heads).read_to(opened + 1)

            return wake

        reads = {
            "round_wake_read_seconds": {
                f"round_{early}": _seconds(wake_in_round(early)),
                f"round_{late}": _seconds(wake_in_round(late)),
            },
            "follower_caught_up_read_seconds": _seconds(follower.read),
            "follower_first_read_seconds": follower_first_seconds,
            "every_event_from_block_0_seconds": _seconds(
                lambda: events.fetch_events(w3, history.address, 0, "latest"), repeats=3
            ),
        }

        by_database = {}
        for kind in databases:
            with _database(kind, Path(tmp)) as url:
                by_database[kind] = _index_and_serve(w3, history, url, rounds=rounds, api_requests=api_requests)

    checks = {
        f"{kind}_{case}": figures["api"][case]["p99_ms"] <= target
        for kind, figures in by_database.items()
        for case, target in (("lineage", LINEAGE_P99_TARGET_MS), ("round_page_last", ROUND_PAGE_P99_TARGET_MS))
    }
    return rounded(
        {
            "history": f"{rounds} rounds x {nodes} submissions on anvil (every 10th rejected), real contract calls, fake hashes",
            "events": history.events,
            "blocks": history.head_block - history.deploy_block + 1,
            "generate_seconds": generate_seconds,
            "chain_reads": reads,
            "by_database": by_database,
            "targets": {"lineage_p99_ms_max": LINEAGE_P99_TARGET_MS, "round_page_p99_ms_max": ROUND_PAGE_P99_TARGET_MS},
            "checks": checks,
            "meets_targets": all(checks.values()),
        }
    )


def _index_and_serve(w3: Any, history: Any, url: str, *, rounds: int, api_requests: int) -> dict[str, Any]:
    from ledger.api.app import create_app
    from ledger.api.server import serve_in_thread
    from ledger.chain.client import LedgerClient
    from ledger.index import queries
    from ledger.index.db import make_engine, session_factory, transaction, upgrade
    from ledger.index.indexer import Indexer
    from ledger.store.local import LocalBlobStore

    engine = make_engine(url)
    try:
        upgrade(engine)
        sessions = session_factory(engine)
        indexer = Indexer(w3, history.address, sessions, start_block=history.deploy_block)
        stats = indexer.run_once()
        if stats.events != history.events:
            raise RuntimeError(f"indexed {stats.events} events, the chain has {history.events}")
        caught_up_step = _seconds(indexer.step)
        _settle(engine)
        with transaction(sessions) as session:
            tip = queries.latest_version(session)
            assert tip is not None
            tip_hash = tip.model_hash
        with tempfile.TemporaryDirectory(prefix="fedledger-bench-history-blobs-") as blobs:
            # Answers are checked against the chain, as `fedledger api serve` checks them.
            app = create_app(
                store=LocalBlobStore(Path(blobs), 1 << 20),
                ledger=LedgerClient(w3, history.address),
                max_blob_bytes=1 << 20,
                index_sessions=sessions,
                ledger_from_block=history.deploy_block,
            )
            cases = {
                "lineage": f"/api/v1/models/{tip_hash}/lineage",
                "round_page_last": f"/api/v1/rounds/{rounds}",
                "round_page_first": "/api/v1/rounds/1",
                "summary": "/api/v1/summary",
            }
            with serve_in_thread(app, threads=4) as server:
                api = {}
                for name, path in cases.items():
                    latency = http_latency(server.host, server.port, path, requests=api_requests)
                    if json.loads(latency.last_body).get("checked_against_chain") is not True:
                        raise RuntimeError(f"{path} was not checked against the chain: {latency.last_body[:300]!r}")
                    api[name] = latency.summary(label=path.replace(tip_hash, "<tip>"))
    finally:
        engine.dispose()
    return {
        "index_seconds": stats.seconds,
        "index_events_per_second": round(stats.events / stats.seconds),
        "indexer_poll_when_caught_up_seconds": caught_up_step,
        "api": api,
    }




def _settle(engine: Any) -> None:
    """What a database does by itself soon after a bulk load (autovacuum: statistics and the
    visibility map PostgreSQL's index-only scans need), done now so the latencies are steady-state."""
    from sqlalchemy import text

    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
