"""`fedledger api serve`: run the ledger service under waitress; `serve_in_thread` for tests and demos.

The service keeps blobs in a `LocalArtifactStore` and asks the chain (read-only, no key) who
may upload. waitress buffers each request body before the app sees it, so its own body limit is
set just above the app's: the app, not waitress, answers oversized uploads with a JSON 413.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8600
DEFAULT_THREADS = 4
_BODY_SLACK_BYTES = 1 << 20  # headroom so waitress lets the app see (and refuse) slightly oversized bodies
_POLL_SECONDS = 0.02


@dataclass
class RunningServer:
    """A waitress server running on its own thread; `close()` stops it and waits for the thread."""

    server: Any  # waitress BaseWSGIServer
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self, timeout: float = 10.0) -> None:
        """Close every socket from inside the server's loop (its map is not thread-safe), then join."""
        if self.thread.is_alive():
            from waitress import wasyncore

            self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self.server._map))
            self.thread.join(timeout)
            if self.thread.is_alive():
                raise RuntimeError(f"waitress on {self.url} did not stop within {timeout} s")
        self.server.task_dispatcher.shutdown(timeout=timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def waitress_options(*, max_artifact_bytes: int, threads: int) -> dict[str, Any]:
    """The waitress adjustments the service runs with (shared by the CLI and `serve_in_thread`)."""
    return {
        "threads": threads,
        "max_request_body_size": max_artifact_bytes + _BODY_SLACK_BYTES,
        "ident": "fedledger",
        "clear_untrusted_proxy_headers": True,
    }


def serve_in_thread(
    app: Any,
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    threads: int = 2,
    max_artifact_bytes: int | None = None,
    ready_timeout: float = 10.0,
) -> RunningServer:
    """Start waitress for `app` on a daemon thread (port 0: a free one) and return once it answers.

    `max_artifact_bytes` defaults to the app's MAX_CONTENT_LENGTH when it has one.
    """
    from waitress.server import create_server

    limit = max_artifact_bytes or getattr(app, "config", {}).get("MAX_CONTENT_LENGTH") or 1 << 30
    server = create_server(app, host=host, port=port, **waitress_options(max_artifact_bytes=limit, threads=threads))
    if not hasattr(server, "effective_port"):  # a name that resolved to several addresses
        server.close()
        raise ValueError(f"serve_in_thread needs one IP address to listen on, got {host!r}")
    bound_port = int(server.effective_port)
    thread = threading.Thread(target=server.run, name=f"waitress:{bound_port}", daemon=True)
    thread.start()
    running = RunningServer(server=server, thread=thread, host=host, port=bound_port)
    try:
        wait_for_port(host, bound_port, timeout=ready_timeout)
    except BaseException:
        running.close()
        raise
    return running


def wait_for_port(host: str, port: int, *, timeout: float) -> None:
    """Poll until a TCP connection to host:port succeeds; `TimeoutError` after `timeout` seconds."""
    from ledger.polling import poll_until

    def accepts() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            return False

    poll_until(accepts, timeout=timeout, interval=_POLL_SECONDS, what=f"connections on {host}:{port}")


# --------------------------------------------------------------------------- CLI


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    api = subparsers.add_parser("api", help="the ledger service (HTTP artifact store)")
    sub = api.add_subparsers(dest="api_command", required=True, metavar="ACTION")
    serve = sub.add_parser("serve", help="serve /artifacts/<sha256> with waitress; uploads need a node's signature")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    serve.add_argument("--rpc-url", default=None, help="JSON-RPC endpoint (default: $FEDLEDGER_RPC_URL or the devnet)")
    serve.add_argument(
        "--contract", default=None, help="ledger address (default: $FEDLEDGER_CONTRACT, else var/deployments/)"
    )
    serve.add_argument("--artifacts-dir", type=Path, default=None, help="blob folder (default: var/artifacts)")
    serve.add_argument(
        "--max-artifact-bytes",
        type=int,
        default=None,
        help="largest blob accepted (default: $FEDLEDGER_MAX_ARTIFACT_BYTES, else 512 MiB)",
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
    from ledger.chain import connect
    from ledger.cli import CommandError
    from ledger.client import LedgerClient
    from ledger.config import Settings
    from ledger.deploy import load_deployment
    from ledger.errors import LedgerError
    from ledger.store import LocalArtifactStore

    if args.threads < 1:
        raise CommandError(f"--threads must be at least 1, got {args.threads}")
    settings = Settings().with_overrides(
        rpc_url=args.rpc_url,
        contract_address=args.contract,
        artifacts_dir=args.artifacts_dir,
        max_artifact_bytes=args.max_artifact_bytes,
    )
    try:
        w3 = connect(settings.rpc_url)
        address = settings.contract_address or load_deployment(w3).address
        if not Web3.is_address(address):
            raise CommandError(f"--contract {address!r} is not an address")
        if not w3.eth.get_code(Web3.to_checksum_address(address)):
            raise CommandError(f"no contract at {address} on chain {w3.eth.chain_id}: check --contract / --rpc-url")
        ledger = LedgerClient(w3, address)
        store = LocalArtifactStore(settings.artifacts_dir, settings.max_artifact_bytes)
    except (LedgerError, ValueError) as exc:
        raise CommandError(str(exc)) from exc

    from ledger.index.db import SchemaOutOfDate, service_database_url

    database_url = service_database_url(args.database_url)
    try:
        app = create_app(
            store=store, ledger=ledger, max_artifact_bytes=settings.max_artifact_bytes, database_url=database_url
        )
    except SchemaOutOfDate as exc:  # refuse to serve an index the code cannot read
        raise CommandError(str(exc)) from exc
    try:
        server = create_server(
            app,
            host=args.host,
            port=args.port,
            **waitress_options(max_artifact_bytes=settings.max_artifact_bytes, threads=args.threads),
        )
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
    for listen_host, listen_port in getattr(server, "effective_listen", None) or [
        (server.effective_host, server.effective_port)
    ]:
        print(f"fedledger api on http://{listen_host}:{listen_port}")
    print(f"  ledger {ledger.address} on chain {ledger.chain_id} via {settings.rpc_url}")
    print(f"  artifacts in {settings.artifacts_dir} (limit {settings.max_artifact_bytes} bytes)")
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
