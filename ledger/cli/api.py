"""`fedledger api serve` (the ledger service: blob store, /api/v1, the audit page) and `fedledger api gc`."""

from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path
from typing import Any

from ledger.api.server import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_THREADS

MIB = 1024 * 1024

REQUEST_PATIENCE_SECONDS = 5.0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    api = subparsers.add_parser("api", help="the ledger service (HTTP blob store, audit API and page)")
    sub = api.add_subparsers(dest="api_command", required=True, metavar="ACTION")
    serve = sub.add_parser(
        "serve", help="serve /blobs/<sha256>, /api/v1 and the audit page (uvicorn + a2wsgi); uploads need a node's signature"
    )
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    _add_chain_and_store(serve)
    serve.add_argument(
        "--max-blob-bytes",
        type=int,
        default=None,
        help="largest blob accepted (default: $FEDLEDGER_MAX_BLOB_BYTES, else 512 MiB)",
    )
    serve.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help=f"WSGI worker threads (default {DEFAULT_THREADS})"
    )
    serve.add_argument(
        "--database-url",
        default=None,
        help="SQL index for /api/v1 (default: $FEDLEDGER_DATABASE_URL, else var/index.sqlite if it exists)",
    )
    limits = serve.add_argument_group("limits against slow, idle and greedy clients")
    limits.add_argument("--max-connections", type=int, default=2000, help="open connections in all (default 2000)")
    limits.add_argument(
        "--max-connections-per-client", type=int, default=64, help="open connections per client address (default 64)"
    )
    limits.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds from connect to the end of the request headers (default 10)"
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=10.0,
        help="an upload must move at least 64 KiB per this many seconds once read (default 10)",
    )
    limits.add_argument(
        "--node-quota-mb", type=float, default=None, help="bytes a node may store per round (default: twice --max-blob-bytes)"
    )
    gc = serve.add_argument_group("garbage collection of blobs no chain event pins")
    _add_gc_policy(gc)
    gc.add_argument(
        "--gc-interval-minutes", type=float, default=10.0, help="minutes between collections; 0 turns it off (default 10)"
    )
    serve.set_defaults(handler=_serve)

    collect = sub.add_parser("gc", help="delete blobs no chain event pins (after the grace period) and stale temp files, once")
    _add_chain_and_store(collect)
    _add_gc_policy(collect)
    collect.add_argument("--json", action="store_true", help="print the report as one JSON object")
    collect.set_defaults(handler=_collect)


def _add_chain_and_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpc-url", default=None, help="JSON-RPC endpoint (default: $FEDLEDGER_RPC_URL or the devnet)")
    parser.add_argument(
        "--contract", default=None, help="ledger address (default: $FEDLEDGER_CONTRACT, else var/deployments/)"
    )
    parser.add_argument("--blobs-dir", type=Path, default=None, help="blob folder (default: var/blobs)")


def _add_gc_policy(parser: Any) -> None:
    parser.add_argument(
        "--gc-grace-hours", type=float, default=24.0, help="keep an unpinned blob this long after it was written (default 24)"
    )
    parser.add_argument(
        "--gc-temp-grace-hours", type=float, default=1.0, help="keep an untouched temp file this long (default 1)"
    )


def _open_ledger(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(settings, read-only LedgerClient, LocalBlobStore) from the shared options; `CommandError` if unusable."""
    from web3 import Web3

    from ledger.chain.client import LedgerClient
    from ledger.chain.connect import connect
    from ledger.chain.deploy import check_ledger_code, load_deployment
    from ledger.cli.errors import CommandError, UsageError
    from ledger.config import Settings
    from ledger.core.errors import LedgerError, Unavailable
    from ledger.store.local import LocalBlobStore

    settings = Settings().with_overrides(
        rpc_url=args.rpc_url,
        contract_address=args.contract,
        blobs_dir=args.blobs_dir,
        max_blob_bytes=getattr(args, "max_blob_bytes", None),
    )
    try:
        # Short patience: a request asking the chain (who may upload?) answers 503 within seconds
        # during an outage, and the client retries; the service itself keeps running.
        w3 = connect(settings.rpc_url, patience=REQUEST_PATIENCE_SECONDS)
        address = settings.contract_address or load_deployment(w3).address
        if not Web3.is_address(address):
            raise UsageError(f"--contract {address!r} is not an address (0x and 40 hex digits)")
        check_ledger_code(w3, address)
        ledger = LedgerClient(w3, address)
        store = LocalBlobStore(settings.blobs_dir, settings.max_blob_bytes)
    except Unavailable:
        raise  # exit 3: nothing answers at the RPC URL
    except (LedgerError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    return settings, ledger, store


def _gc_policy(args: argparse.Namespace) -> Any:
    from ledger.api.gc import GcPolicy
    from ledger.cli.errors import UsageError

    try:
        return GcPolicy(grace_seconds=args.gc_grace_hours * 3600, temp_grace_seconds=args.gc_temp_grace_hours * 3600)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _server_options(args: argparse.Namespace) -> Any:
    from ledger.api.guard import ConnectionLimits
    from ledger.api.server import ServerOptions
    from ledger.cli.errors import UsageError

    try:
        limits = ConnectionLimits(
            max_connections=args.max_connections,
            max_per_client=args.max_connections_per_client,
            header_timeout=args.header_timeout,
            body_window=args.body_timeout,
        )
        return ServerOptions(threads=args.threads, limits=limits)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _serve(args: argparse.Namespace) -> int:
    from ledger.api.app import create_app
    from ledger.api.gc import Collector, PinnedHashes
    from ledger.api.server import listen, serve_forever
    from ledger.core.heap import freeze_heap
    from ledger.cli.errors import CommandError, UsageError
    from ledger.cli.wiring import deployment_block
    from ledger.index.db import SchemaOutOfDate, service_database_url

    options = _server_options(args)
    policy = _gc_policy(args)
    if args.node_quota_mb is not None and not 0 < args.node_quota_mb < math.inf:  # NaN too
        raise UsageError(f"--node-quota-mb must be positive, got {args.node_quota_mb}")
    if not 0 <= args.gc_interval_minutes < math.inf:
        raise UsageError(f"--gc-interval-minutes must be 0 (off) or positive, got {args.gc_interval_minutes}")
    settings, ledger, store = _open_ledger(args)
    from_block = deployment_block(ledger)  # where the chain's events, which answers are checked against, start
    database_url = service_database_url(args.database_url)
    quota = int(args.node_quota_mb * MIB) if args.node_quota_mb is not None else None
    try:
        app = create_app(
            store=store,
            ledger=ledger,
            max_blob_bytes=settings.max_blob_bytes,
            database_url=database_url,
            ledger_from_block=from_block,
            node_quota_bytes=quota,
        )
    except SchemaOutOfDate as exc:  # refuse to serve an index the code cannot read
        raise CommandError(str(exc)) from exc
    try:
        sock = listen(args.host, args.port, backlog=options.backlog)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
    listen_host, listen_port = sock.getsockname()[:2]
    print(f"fedledger api on http://{listen_host}:{listen_port}")
    print(f"  ledger {ledger.address} on chain {ledger.chain_id} via {settings.rpc_url}")
    print(f"  blobs in {settings.blobs_dir} (limit {settings.max_blob_bytes} bytes)")
    if database_url is None:
        print("  audit API off: no index database (run `fedledger db upgrade` and `fedledger index run`)")
    else:
        from sqlalchemy.engine import make_url

        print(f"  audit API /api/v1 from {make_url(database_url).render_as_string(hide_password=True)}")
    collector = None
    if args.gc_interval_minutes > 0:
        collector = Collector(store, PinnedHashes(ledger), policy, args.gc_interval_minutes * 60).start()
        print(f"  gc every {args.gc_interval_minutes:g} min: unpinned blobs after {args.gc_grace_hours:g} h")
    sys.stdout.flush()
    # SIGTERM (service managers, containers) stops like Ctrl-C; uvicorn shuts down gracefully,
    # then re-raises the signal under this handler, which exits 0.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    freeze_heap()
    try:
        serve_forever(app, sock, options)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if collector is not None:
            collector.stop()
        sock.close()
    return 0


def _collect(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from ledger.api.gc import PinnedHashes, collect_garbage

    policy = _gc_policy(args)
    _, ledger, store = _open_ledger(args)
    report = collect_garbage(store, PinnedHashes(ledger), policy)
    if args.json:
        print(json.dumps({**asdict(report), "deleted": list(report.deleted)}, sort_keys=True))
    else:
        print(
            f"deleted {len(report.deleted)} unpinned blobs ({report.deleted_bytes} bytes) and "
            f"{report.temp_files_deleted} stale temp files; kept {report.kept_pinned} pinned and "
            f"{report.kept_young} within the grace period (chain read through block {report.pinned_through_block})"
        )
    return 0
