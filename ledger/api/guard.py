"""The connection guard: what a service open to strangers needs and uvicorn's HTTP/1.1 protocol lacks.

uvicorn (h11) holds every connection on one asyncio loop for the price of a socket, and h11 caps
the header block and every chunk-size line (16 KiB, searched linearly). What neither offers, this
subclass of uvicorn's `H11Protocol` adds, each with a counter in `ConnectionGuard`:

- **caps**: at most `max_per_client` connections per client address (per /64 for IPv6) and
  `max_connections` in all; at the total cap a newcomer evicts the oldest connection still
  waiting for its headers, so a crowd of idle sockets cannot lock out clients that do send;
- **a header deadline** counted from accept (or from the end of the previous response), which
  a client dripping one byte at a time cannot reset;
- **no body byte before the app asks**: reading pauses at the end of a request's headers and
  only the app's first read of `wsgi.input` resumes it (uvicorn then sends `100 Continue`), so
  the app checks signature, role and quota from the headers alone;
- **a minimum body rate** while the app reads, so a registered client cannot hold a worker
  thread by dripping its body, and **a minimum read rate** while a response waits in the send
  buffer, so a client reading a large blob slowly cannot hold its bytes in memory for hours;
- **linger, never drain**: a response sent while the request body is unread half-closes the
  connection, discards what the client still sends for a short while (so it reads the answer
  instead of a reset) and then closes, rather than feeding the unread body to anyone.

The class is handed to `uvicorn.Config(http=...)`, a documented parameter; the members it
overrides or reads (`connection_made`, `connection_lost`, `data_received`, `handle_events`,
`on_response_complete`, `conn`, `cycle`, `flow`, `client`, `transport`) are uvicorn internals,
which is why uvicorn is pinned exactly and every behaviour here has a test.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 26\r\n"
    b"connection: close\r\nretry-after: 5\r\n\r\ntoo many open connections\n"
)
_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 30\r\n"
    b"connection: close\r\n\r\nrequest headers took too long\n"
)


@dataclass(frozen=True)
class ConnectionLimits:
    """How much of the service one client, and all of them, may hold; how slow they may be."""

    max_connections: int = 2000  # open connections in all (each costs a file descriptor)
    max_per_client: int = 64  # open connections per client address (IPv6: per /64)
    header_timeout: float = 10.0  # accept (or end of last response) -> end of the next header block
    body_window: float = 10.0  # while the app reads a body, or a response waits to be read, at least ...
    body_min_bytes: int = 64 * 1024  # ... this many bytes must move per window, else the connection is cut
    linger_seconds: float = 2.0  # after answering an unread body: how long to discard what still comes
    linger_bytes: int = 64 * 1024 * 1024  # ... and how much of it, at most

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_per_client", "body_min_bytes", "linger_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("header_timeout", "body_window", "linger_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass
class ConnectionGuard:
    """The counts every guarded connection of one server shares (touched only on its event loop)."""

    limits: ConnectionLimits
    open: int = 0
    per_client: collections.Counter[str] = field(default_factory=collections.Counter)
    # connections whose current request has not finished its headers, oldest first
    waiting: dict[GuardedH11Protocol, None] = field(default_factory=dict)
    refused: int = 0
    evicted: int = 0
    header_timeouts: int = 0
    slow_bodies: int = 0
    slow_readers: int = 0
    unread_bodies: int = 0

    def stats(self) -> dict[str, int]:
        return {
            "open": self.open,
            "refused": self.refused,
            "evicted": self.evicted,
            "header_timeouts": self.header_timeouts,
            "slow_bodies": self.slow_bodies,
            "slow_readers": self.slow_readers,
            "unread_bodies": self.unread_bodies,
        }

    def admit(self, connection: GuardedH11Protocol) -> bool:
        """Count a new connection in, evicting the oldest header-waiter at the total cap; False: refuse it."""
        client = connection.client_key
        if self.per_client[client] >= self.limits.max_per_client:
            self.refused += 1
            return False
        if self.open >= self.limits.max_connections:
            if not self.waiting:
                self.refused += 1
                return False
            oldest = next(iter(self.waiting))
            self.evicted += 1
            oldest.cut(_TIMEOUT)
        self.open += 1
        self.per_client[client] += 1
        return True

    def release(self, client: str) -> None:
        self.open -= 1
        self.per_client[client] -= 1
        if not self.per_client[client]:
            del self.per_client[client]


def client_key(host: str) -> str:
    """What the per-client cap counts: the IPv4 address, or the IPv6 /64 (one subscriber's block)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the guard's caps, deadlines and body gate (see the module docstring)."""

    guard: ClassVar[ConnectionGuard]  # set on the per-server subclass made by `guarded_protocol`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._counted = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._write_mark = 0
        self._gated_cycle: Any = None
        self._window_bytes = 0
        self._lingering = False
        self._discarded = 0
        self.client_key = client_key(self.client[0]) if self.client else "?"
        if not self.guard.admit(self):
            transport.write(_BUSY)
            transport.close()
            return
        self._counted = True
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        for timer in (self._header_timer, self._body_timer, self._linger_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = self._linger_timer = self._write_timer = None
        super().connection_lost(exc)

    def cut(self, answer: bytes) -> None:
        """Answer `answer` (a canned response) and close; the slot is free at once."""
        self._release()
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()

    def _release(self) -> None:
        self.guard.waiting.pop(self, None)
        if self._counted:
            self._counted = False
            self.guard.release(self.client_key)

    # ------------------------------------------------------------------ header deadline

    def _await_headers(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        # 75-100 % of the timeout, so connections opened in one burst are not all cut in one loop turn
        deadline = self.guard.limits.header_timeout * (0.75 + 0.25 * random.random())
        self._header_timer = self.loop.call_later(deadline, self._header_deadline)
        self.guard.waiting[self] = None

    def _headers_arrived(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.guard.waiting.pop(self, None)

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.guard.header_timeouts += 1
            self.cut(_TIMEOUT)

    # ------------------------------------------------------------------ body gate and rate

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._discarded += len(data)
            if self._discarded > self.guard.limits.linger_bytes:
                self.transport.abort()
            return
        self._window_bytes += len(data)
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is not h11.IDLE:
            self._headers_arrived()
        if state is h11.SEND_BODY and self.cycle is not None and self._gated_cycle is not self.cycle:
            # The end of a request's headers, and a body follows: read none of it until the app
            # asks (uvicorn's `receive()` resumes reading first thing, after any 100 Continue).
            self._gated_cycle = self.cycle
            self.flow.pause_reading()
            self._window_bytes = 0
            self._body_timer = self.loop.call_later(self.guard.limits.body_window, self._body_check)

    def _body_check(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self._lingering or self.conn.their_state is not h11.SEND_BODY:
            return
        # Only a client that could have sent is judged: reading paused by the gate (the app has
        # not asked yet) or by back-pressure (the app is slower than the client) is not its fault.
        if not self.flow.read_paused and self._window_bytes < self.guard.limits.body_min_bytes:
            self.guard.slow_bodies += 1
            self.transport.close()  # the app's next read sees a disconnect
            return
        self._window_bytes = 0
        self._body_timer = self.loop.call_later(self.guard.limits.body_window, self._body_check)

    # ------------------------------------------------------------------ slow readers

    def pause_writing(self) -> None:
        """The send buffer is full: from now on the client must drain it at the minimum rate."""
        super().pause_writing()
        if self._write_timer is None:
            self._write_mark = self.transport.get_write_buffer_size()
            self._write_timer = self.loop.call_later(self.guard.limits.body_window, self._write_check)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_check(self) -> None:
        self._write_timer = None
        if self.transport.is_closing():
            return
        pending = self.transport.get_write_buffer_size()
        if self._write_mark - pending < self.guard.limits.body_min_bytes:
            self.guard.slow_readers += 1
            self.transport.abort()  # drops the buffered response: its memory is the point
            return
        self._write_mark = pending
        self._write_timer = self.loop.call_later(self.guard.limits.body_window, self._write_check)

    # ------------------------------------------------------------------ after the response

    def on_response_complete(self) -> None:
        if not self.transport.is_closing() and self.conn.their_state is h11.SEND_BODY:
            self.guard.unread_bodies += 1
            self.server_state.total_requests += 1
            self._linger()
            return
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._await_headers()  # the next request's headers are due within the deadline

    def _linger(self) -> None:
        """Half-close after answering an unread body: the client, still sending, reads the answer
        instead of a reset; what it sends meanwhile is discarded, never buffered."""
        self._lingering = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except OSError:  # the client is already gone: nothing to linger for
            self.transport.abort()
            return
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(self.guard.limits.linger_seconds, self.transport.abort)


def guarded_protocol(limits: ConnectionLimits) -> tuple[type[GuardedH11Protocol], ConnectionGuard]:
    """A protocol class for one server (`uvicorn.Config(http=...)`) and the guard its connections share."""
    guard = ConnectionGuard(limits)
    protocol = type("FedledgerH11Protocol", (GuardedH11Protocol,), {"guard": guard})
    return protocol, guard
