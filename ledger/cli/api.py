"""`fedledger api serve`: the ledger service (blob store, /api/v1, the audit page) under waitress."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ledger.api.server import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_THREADS, waitress_options


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    api = subparsers.add_parser("api", help="the ledger service (HTTP blob store)")
    sub = api.add_subparsers(dest="api_command", required=True, metavar="ACTION")
    serve = sub.add_parser("serve", help="serve /blobs/<sha256> with waitress; uploads need a node's signature")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    serve.add_argument("--rpc-url", default=None, help="JSON-RPC endpoint (default: $FEDLEDGER_RPC_URL or the devnet)")
    serve.add_argument(
        "--contract", default=None, help="ledger address (default: $FEDLEDGER_CONTRACT, else var/deployments/)"
    )
    serve.add_argument("--blobs-dir", type=Path, default=None, help="blob folder (default: var/blobs)")
    serve.add_argument(
        "--max-blob-bytes",
        type=int,
        default=None,
        help="largest blob accepted (default: $FEDLEDGER_MAX_BLOB_BYTES, else 512 MiB)",
    )
    serve.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help=f"worker threads (default {DEFAULT_THREADS})"
    )
    serve.add_argument(
        "--database-url",
        default=None,
        help="SQL index for /api/v1 (default: $FEDLEDGER_DATABASE_URL, else var/index.sqlite if it exists)",
    )
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from waitress.server import create_server
    from web3 import Web3

    from ledger.api.app import create_app
    from ledger.chain.connect import connect
    from ledger.cli.errors import CommandError
    from ledger.chain.client import LedgerClient
    from ledger.config import Settings
    from ledger.chain.deploy import load_deployment
    from ledger.cli.wiring import deployment_block
    from ledger.core.errors import LedgerError
    from ledger.store.local import LocalBlobStore

    if args.threads < 1:
        raise CommandError(f"--threads must be at least 1, got {args.threads}")
    settings = Settings().with_overrides(
        rpc_url=args.rpc_url,
        contract_address=args.contract,
        blobs_dir=args.blobs_dir,
        max_blob_bytes=args.max_blob_bytes,
    )
    try:
        w3 = connect(settings.rpc_url)
        address = settings.contract_address or load_deployment(w3).address
        if not Web3.is_address(address):
            raise CommandError(f"--contract {address!r} is not an address")
        if not w3.eth.get_code(Web3.to_checksum_address(address)):
            raise CommandError(f"no contract at {address} on chain {w3.eth.chain_id}: check --contract / --rpc-url")
        ledger = LedgerClient(w3, address)
        store = LocalBlobStore(settings.blobs_dir, settings.max_blob_bytes)
        from_block = deployment_block(ledger)  # where the chain's events, which answers are checked against, start
    except (LedgerError, ValueError) as exc:
        raise CommandError(str(exc)) from exc

    from ledger.index.db import SchemaOutOfDate, service_database_url

    database_url = service_database_url(args.database_url)
    try:
        app = create_app(
            store=store,
            ledger=ledger,
            max_blob_bytes=settings.max_blob_bytes,
            database_url=database_url,
            ledger_from_block=from_block,
        )
    except SchemaOutOfDate as exc:  # refuse to serve an index the code cannot read
        raise CommandError(str(exc)) from exc
    try:
        server = create_server(
            app,
            host=args.host,
            port=args.port,
            **waitress_options(max_blob_bytes=settings.max_blob_bytes, threads=args.threads),
        )
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
    for listen_host, listen_port in getattr(server, "effective_listen", None) or [
        (server.effective_host, server.effective_port)
    ]:
        print(f"fedledger api on http://{listen_host}:{listen_port}")
    print(f"  ledger {ledger.address} on chain {ledger.chain_id} via {settings.rpc_url}")
    print(f"  blobs in {settings.blobs_dir} (limit {settings.max_blob_bytes} bytes)")
    if database_url is None:
        print("  audit API off: no index database (run `fedledger db upgrade` and `fedledger index run`)")
    else:
        from sqlalchemy.engine import make_url

        print(f"  audit API /api/v1 from {make_url(database_url).render_as_string(hide_password=True)}")
    # SIGTERM (service managers, containers) stops like Ctrl-C: waitress's run() catches SystemExit
    # and shuts its worker threads down.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    server.run()
    return 0
