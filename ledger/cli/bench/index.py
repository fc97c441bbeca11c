"""`fedledger bench index` and `fedledger bench api`: indexer throughput and lineage latency, as JSON.

- index: a throwaway anvil gets ~11,000 ledger events (100 nodes x 100 rounds, every 10th update
  rejected, sent as JSON-RPC batches); each run indexes all of them into a fresh SQLite file with
  the real indexer (eth_getLogs, decode, write, cursor). Reports the median events/s over the runs,
  and, separately, the chain-read and the SQL-write share of one run.
- api: a 1,000-version linear history is built on a throwaway anvil and indexed, then
  `/api/v1/models/<tip>/lineage` is requested through the real server (uvicorn + a2wsgi) over keep-alive HTTP,
  every answer checked against the chain; p50/p99 for the default page (50 steps), the last page,
  and the whole lineage at once. Side by side: the same shape written straight into SQL and served
  with no chain to check against (what the checks cost).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from ledger.cli.bench.common import add_output_arguments, emit, http_latency, median

INDEX_TARGET_EVENTS_PER_SECOND = 5_000
API_TARGET_P99_MS = 20.0


def add_bench(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser("index", help="indexer throughput: events/s from anvil into SQLite")
    index.add_argument("--nodes", type=int, default=100, help="node accounts submitting each round (default 100)")
    index.add_argument("--rounds", type=int, default=100, help="rounds (default 100: ~11,300 events)")
    index.add_argument("--runs", type=int, default=3, help="indexing runs, each into a fresh database (default 3)")
    index.add_argument("--batch-blocks", type=int, default=2000, help="blocks per eth_getLogs (default 2000)")
    add_output_arguments(index)
    index.set_defaults(handler=_run_index)

    api = subparsers.add_parser("api", help="latency of /models/<hash>/lineage on a 1,000-version history")
    api.add_argument("--versions", type=int, default=1000, help="versions in the lineage (default 1000)")
    api.add_argument("--updates", type=int, default=5, help="included updates per version (default 5)")
    api.add_argument("--requests", type=int, default=400, help="requests per measured case (default 400)")
    add_output_arguments(api)
    api.set_defaults(handler=_run_api)


# --------------------------------------------------------------------------- index


def measure_index(*, nodes: int, rounds: int, runs: int, batch_blocks: int) -> dict[str, Any]:
    from sqlalchemy import func, select

    from ledger.chain import events as ev
    from ledger.chain.connect import connect
    from ledger.index.db import make_engine, session_factory, transaction, upgrade
    from ledger.index.indexer import Indexer, IndexerConfig, apply_events
    from ledger.index.models import ChainEvent
    from ledger.chain.devnet import throwaway_devnet
    from ledger.cli.bench.synthetic import anvil_bulk_history

    with throwaway_devnet(gas_limit=100_000_000) as anvil, tempfile.TemporaryDirectory(prefix="fedledger-bench-index-") as tmp:
        started = time.perf_counter()
        history = anvil_bulk_history(anvil.rpc_url, nodes=nodes, rounds=rounds)
        generate_seconds = time.perf_counter() - started
        w3 = connect(anvil.rpc_url)

        def fresh(name: str) -> Any:
            engine = make_engine(f"sqlite:///{Path(tmp) / name}.sqlite")
            upgrade(engine)
            return engine

        seconds: list[float] = []
        for run in range(runs):
            engine = fresh(f"run-{run}")
            sessions = session_factory(engine)
            indexer = Indexer(
                w3,
                history.address,
                sessions,
                start_block=history.deploy_block,
                config=IndexerConfig(batch_blocks=batch_blocks),
            )
            stats = indexer.run_once()
            with transaction(sessions) as session:
                stored = session.scalar(select(func.count()).select_from(ChainEvent))
            if stored != history.events:
                raise RuntimeError(f"run {run} indexed {stored} events, the chain has {history.events}")
            seconds.append(stats.seconds)
            engine.dispose()

        # Where one run's time goes: reading + decoding from the chain vs writing into SQL.
        started = time.perf_counter()
        found = ev.fetch_events(w3, history.address, history.deploy_block, history.head_block)
        read_seconds = time.perf_counter() - started
        engine = fresh("write-only")
        started = time.perf_counter()
        with transaction(session_factory(engine)) as session:
            apply_events(session, found)
        write_seconds = time.perf_counter() - started
        engine.dispose()

    rate = history.events / median(seconds)
    return {
        "benchmark": "index",
        "chain": "anvil (throwaway, automine off: one block per round phase)",
        "database": "sqlite file (WAL), fresh per run",
        "events": history.events,
        "blocks": history.head_block - history.deploy_block + 1,
        "nodes": nodes,
        "rounds": rounds,
        "batch_blocks": batch_blocks,
        "runs": runs,
        "seconds": [round(s, 4) for s in seconds],
        "median_seconds": round(median(seconds), 4),
        "median_events_per_second": round(rate),
        "breakdown_one_pass": {
            "chain_read_and_decode_seconds": round(read_seconds, 4),
            "sql_write_seconds": round(write_seconds, 4),
            "sql_write_events_per_second": round(history.events / write_seconds),
        },
        "generate_seconds": round(generate_seconds, 2),
        "target_events_per_second": INDEX_TARGET_EVENTS_PER_SECOND,
        "meets_target": rate >= INDEX_TARGET_EVENTS_PER_SECOND,
    }


def _run_index(args: argparse.Namespace) -> int:
    report = measure_index(nodes=args.nodes, rounds=args.rounds, runs=args.runs, batch_blocks=args.batch_blocks)
    emit(report, as_json=args.json)
    return 0 if report["meets_target"] else 1


# --------------------------------------------------------------------------- api


def measure_api(*, versions: int, updates: int, requests: int) -> dict[str, Any]:
    """Lineage latency of the API as served (each answer checked against the chain) and, side by
    side, of the same history written straight into SQL and served with no chain to check against."""
    from ledger.api.app import create_app
    from ledger.chain.client import LedgerClient
    from ledger.chain.connect import connect
    from ledger.chain.devnet import throwaway_devnet
    from ledger.cli.bench.synthetic import anvil_bulk_history, sql_linear_history
    from ledger.index.db import make_engine, session_factory, upgrade
    from ledger.index.indexer import Indexer
    from ledger.store.local import LocalBlobStore

    with tempfile.TemporaryDirectory(prefix="fedledger-bench-api-") as tmp, throwaway_devnet(gas_limit=100_000_000) as anvil:
        store = LocalBlobStore(Path(tmp) / "blobs", max_bytes=1 << 20)

        def index_database(name: str) -> Any:
            engine = make_engine(f"sqlite:///{Path(tmp) / name}.sqlite")
            upgrade(engine)
            return engine

        started = time.perf_counter()
        history = anvil_bulk_history(anvil.rpc_url, nodes=updates, rounds=versions - 1, reject_every=0, label="api")
        w3 = connect(anvil.rpc_url)
        checked_engine = index_database("checked")
        checked_sessions = session_factory(checked_engine)
        Indexer(w3, history.address, checked_sessions, start_block=history.deploy_block).run_once()
        generate_seconds = time.perf_counter() - started
        tip = LedgerClient(w3, history.address).events(history.deploy_block)[-1].model_hash
        checked_app = create_app(
            store=store,
            ledger=LedgerClient(w3, history.address),
            max_blob_bytes=1 << 20,
            index_sessions=checked_sessions,
            ledger_from_block=history.deploy_block,
        )
        checked = _lineage_latencies(checked_app, tip, versions=versions, requests=requests)
        checked_engine.dispose()

        sql_engine = index_database("sql-only")
        sql_sessions = session_factory(sql_engine)
        sql_tip = sql_linear_history(sql_sessions, versions=versions, updates_per_version=updates)
        sql_app = create_app(store=store, ledger=None, max_blob_bytes=1 << 20, index_sessions=sql_sessions)
        unchecked = _lineage_latencies(sql_app, sql_tip, versions=versions, requests=requests)
        sql_engine.dispose()

    p99 = checked["default_page"]["p99_ms"]
    return {
        "benchmark": "api",
        "history": f"{versions} versions (linear lineage, {updates} included updates each)",
        "checked": {
            "how": "history on a throwaway anvil, indexed by the real indexer; every answer compared with the chain's events",
            "events": history.events,
            "generate_and_index_seconds": round(generate_seconds, 2),
            "cases": checked,
        },
        "unchecked": {
            "how": "the same shape written directly into SQL and served with no chain (checked_against_chain: false)",
            "cases": unchecked,
        },
        "database": "sqlite file (WAL)",
        "server": "uvicorn + a2wsgi, 2 threads, one keep-alive HTTP client, sequential requests",
        "p50_ms": checked["default_page"]["p50_ms"],
        "p99_ms": p99,
        "unchecked_p99_ms": unchecked["default_page"]["p99_ms"],
        "target_p99_ms": API_TARGET_P99_MS,
        "meets_target": p99 <= API_TARGET_P99_MS,
    }


def _lineage_latencies(app: Any, tip: str, *, versions: int, requests: int) -> dict[str, Any]:
    """p50/p99 of the default lineage page, the last page and the whole lineage, over real HTTP."""
    import json

    from ledger.api.server import serve_in_thread

    cases = {
        "default_page": f"/api/v1/models/{tip}/lineage",
        "last_page": f"/api/v1/models/{tip}/lineage?offset={max(versions - 50, 0)}",
        "whole_lineage": f"/api/v1/models/{tip}/lineage?limit={min(versions, 1000)}",
    }
    results: dict[str, Any] = {}
    with serve_in_thread(app, threads=2) as server:
        for name, path in cases.items():
            count = requests if name != "whole_lineage" else max(requests // 4, 20)  # 1.6 MB each
            measured = http_latency(server.host, server.port, path, requests=count)
            answer = json.loads(measured.last_body)
            results[name] = {
                **measured.summary(label=path.replace(tip, "<tip>")),
                "steps_per_response": len(answer["items"]),
                "checked_against_chain": answer["checked_against_chain"],
            }
    return results


def _run_api(args: argparse.Namespace) -> int:
    report = measure_api(versions=args.versions, updates=args.updates, requests=args.requests)
    emit(report, as_json=args.json)
    return 0 if report["meets_target"] else 1
