"""Running the ledger service: the Flask WSGI app under uvicorn (h11) + a2wsgi, behind the connection guard.

a2wsgi runs the WSGI app on a thread pool and hands it a lazy `wsgi.input`, so the app sees a
request as soon as its headers are in and decides (signature, role, quota) before reading one
byte of the body; uvicorn's asyncio loop holds every connection, idle or slow, without a thread;
`ledger.api.guard` adds the per-client and total caps, the header deadline, the body gate and
the minimum rates; `UploadPrefilter` answers unsigned, unsized and oversized uploads on the
event loop, before any thread or Flask request is spent on them. One process, like waitress before it: the loop and the worker threads
share the GIL, and the app is the same WSGI app any WSGI server can run.

`serve_in_thread` (tests, the demo, benches) runs it on a daemon thread; `serve_forever` (the
`fedledger api serve` command) on the main thread, where SIGINT and SIGTERM stop it gracefully.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from ledger.api.guard import ConnectionGuard, ConnectionLimits

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8600
DEFAULT_THREADS = 16
_HEADER_BYTES = 16 * 1024  # h11's cap on the header block and on every chunk-size line


@dataclass(frozen=True)
class ServerOptions:
    """How the service runs: worker threads, the guard's limits, keep-alive, backlog, shutdown grace."""

    threads: int = DEFAULT_THREADS
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    keep_alive_seconds: float = 5.0
    backlog: int = 2048
    shutdown_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")


@dataclass
class RunningServer:
    """A server running on its own thread; `close()` stops it gracefully and waits for the thread."""

    server: Any  # uvicorn.Server
    thread: threading.Thread
    host: str
    port: int
    guard: ConnectionGuard
    workers: Any  # the WSGI thread pool (concurrent.futures.ThreadPoolExecutor)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self, timeout: float = 15.0) -> None:
        """Stop accepting, let requests in flight finish (up to the shutdown grace), then join."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"the server on {self.url} did not stop within {timeout} s")
        self.workers.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def listen(host: str, port: int, *, backlog: int = ServerOptions.backlog) -> socket.socket:
    """A listening TCP socket on `host:port` (port 0: a free one); `OSError` if it cannot be had."""
    if not 0 <= port <= 65535:  # getaddrinfo would wrap it: 70000 listened on 4464
        raise ValueError(f"a TCP port is 0..65535, got {port}")
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if len({info[4][0] for info in infos}) > 1:
        raise ValueError(f"the service listens on one IP address, and {host!r} names several: pick one")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def build_server(app: Any, sock: socket.socket, options: ServerOptions) -> tuple[Any, ConnectionGuard, Any]:
    """A uvicorn server for the WSGI `app` on the bound `sock`: (server, guard, WSGI thread pool)."""
    import uvicorn
    from a2wsgi import WSGIMiddleware

    from ledger.api.guard import guarded_protocol

    protocol, guard = guarded_protocol(options.limits)
    middleware = WSGIMiddleware(app, workers=options.threads)
    served: Any = _with_prefilter(app, middleware)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        served,
        host=host,
        port=port,
        http=protocol,
        loop="asyncio",
        lifespan="off",
        interface="asgi3",
        timeout_keep_alive=int(max(options.keep_alive_seconds, 1)),
        timeout_graceful_shutdown=int(max(options.shutdown_seconds, 1)),
        h11_max_incomplete_event_size=_HEADER_BYTES,
        backlog=options.backlog,
        proxy_headers=False,  # the peer address is the client: nothing in front rewrites it
        server_header=False,
        date_header=True,
        access_log=False,
        log_config=None,  # leave the process's logging alone
        log_level="error",  # a flood of malformed requests must not become a flood of log lines
    )
    return uvicorn.Server(config), guard, middleware.executor


class UploadPrefilter:
    """ASGI, in front of the WSGI app: answers the upload refusals that need neither crypto nor the
    chain (`ledger.api.blobs.header_refusal`: 411, 413, 401) on the event loop, so junk uploads
    cost no worker thread and no Flask request. The app repeats the same checks, so it stays
    safe under any other WSGI server."""

    def __init__(self, app: Any, *, limit: int, chain_id: int, contract: str) -> None:
        self.app = app
        self.limit = limit
        self.chain_id = chain_id
        self.contract = contract

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from ledger.api.blobs import header_refusal
        from ledger.core.hashing import is_sha256_hex
        from ledger.store.protocol import BLOBS_PATH, SIGNATURE_HEADER

        path = scope.get("path", "") if scope["type"] == "http" else ""
        if scope.get("method") == "PUT" and path.startswith(BLOBS_PATH) and is_sha256_hex(path[len(BLOBS_PATH) :]):
            headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
            length = headers.get("content-length", "")
            refused = header_refusal(
                content_length=int(length) if length.isascii() and length.isdigit() else None,
                chunked="chunked" in headers.get("transfer-encoding", "").lower(),
                signature=headers.get(SIGNATURE_HEADER.lower()),
                limit=self.limit,
                chain_id=self.chain_id,
                contract=self.contract,
            )
            if refused is not None:
                body = json.dumps(refused.body, sort_keys=True).encode()
                extra = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in refused.headers.items()]
                start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": refused.status, "headers": start + extra})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _with_prefilter(app: Any, asgi_app: Any) -> Any:
    """`asgi_app` behind an `UploadPrefilter` when `app` is the ledger service with a ledger."""
    from ledger.api.services import Services

    found = getattr(app, "extensions", {}).get("fedledger")
    if not isinstance(found, Services) or found.ledger is None:
        return asgi_app
    ledger = found.ledger
    return UploadPrefilter(asgi_app, limit=found.max_blob_bytes, chain_id=ledger.chain_id, contract=ledger.address)


def serve_in_thread(
    app: Any,
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    threads: int = 2,
    options: ServerOptions | None = None,
    ready_timeout: float = 10.0,
) -> RunningServer:
    """Serve `app` from a daemon thread (port 0: a free one) and return once it accepts connections.

    `options` overrides everything (its `threads` included); without it, the default limits and
    `threads` worker threads.
    """
    from ledger.core.polling import poll_until

    options = options or ServerOptions(threads=threads)
    sock = listen(host, port, backlog=options.backlog)
    bound_host, bound_port = sock.getsockname()[:2]
    server, guard, workers = build_server(app, sock, options)
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name=f"fedledger-api:{bound_port}", daemon=True
    )
    thread.start()
    running = RunningServer(server=server, thread=thread, host=bound_host, port=bound_port, guard=guard, workers=workers)
    try:
        poll_until(lambda: server.started or not thread.is_alive(), timeout=ready_timeout, interval=0.02, what="the server")
        if not server.started:
            raise RuntimeError(f"the server on {running.url} stopped while starting")
    except BaseException:
        running.close()
        sock.close()
        raise
    return running


def serve_forever(app: Any, sock: socket.socket, options: ServerOptions) -> None:
    """Serve on the main thread until SIGINT or SIGTERM, then shut down gracefully.

    uvicorn re-raises the signal once it has stopped, under the handlers installed before this
    call: a caller that wants SIGTERM to exit 0 installs such a handler first.
    """
    server, _, workers = build_server(app, sock, options)
    try:
        server.run(sockets=[sock])
    finally:
        workers.shutdown(wait=False, cancel_futures=True)
