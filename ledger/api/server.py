"""Running the ledger service under waitress: its options, and `serve_in_thread` for tests and demos.

The service keeps blobs in a `LocalBlobStore` and asks the chain (read-only, no key) who
may upload. waitress buffers each request body before the app sees it, so its own body limit is
set just above the app's: the app, not waitress, answers oversized uploads with a JSON 413.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
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


def waitress_options(*, max_blob_bytes: int, threads: int) -> dict[str, Any]:
    """The waitress adjustments the service runs with (shared by the CLI and `serve_in_thread`)."""
    return {
        "threads": threads,
        "max_request_body_size": max_blob_bytes + _BODY_SLACK_BYTES,
        "ident": "fedledger",
        "clear_untrusted_proxy_headers": True,
    }


def serve_in_thread(
    app: Any,
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    threads: int = 2,
    max_blob_bytes: int | None = None,
    ready_timeout: float = 10.0,
) -> RunningServer:
    """Start waitress for `app` on a daemon thread (port 0: a free one) and return once it answers.

    `max_blob_bytes` defaults to the app's MAX_CONTENT_LENGTH when it has one.
    """
    from waitress.server import create_server

    limit = max_blob_bytes or getattr(app, "config", {}).get("MAX_CONTENT_LENGTH") or 1 << 30
    server = create_server(app, host=host, port=port, **waitress_options(max_blob_bytes=limit, threads=threads))
    if not hasattr(server, "effective_port"):  # a name that resolved to several addresses
        server.close()
        raise ValueError(f"serve_in_thread needs one IP address to listen on, got {host!r}")
    bound_port = int(server.effective_port)
    thread = threading.Thread(target=server.run, name=f"waitress:{bound_port}", daemon=True)
    thread.start()
    running = RunningServer(server=server, thread=thread, host=host, port=bound_port)
    try:
        from ledger.core.polling import wait_for_port

        wait_for_port(host, bound_port, timeout=ready_timeout, interval=_POLL_SECONDS)
    except BaseException:
        running.close()
        raise
    return running
