"""Running the ledger service: the Flask WSGI app under uvicorn (h11) + a2wsgi, behind the connection guard.

a2wsgi runs the WSGI app on a thread pool and hands it a lazy `wsgi.input`, so the app sees a
request as soon as its headers are in and decides (signature, role, quota) before reading one
byte of the body; uvicorn's asyncio loop holds every connection, idle or slow, without a thread;
`ledger.api.guard` adds the per-client and total caps, the header deadline, the body gate and
the minimum body rate. One process, like waitress before it: the loop and the worker threads
share the GIL, and the app is the same WSGI app any WSGI server can run.

`serve_in_thread` (tests, the demo, benches) runs it on a daemon thread; `serve_forever` (the
`fedledger api serve` command) on the main thread, where SIGINT and SIGTERM stop it gracefully.
"""

from __future__ import annotations

import asyncio
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
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        middleware,
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
