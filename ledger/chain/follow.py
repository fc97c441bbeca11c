"""Following the chain block by block: wake on each new block, read only the blocks not read before.

Every role that waits for something on chain waits here: an edge node for a round to open, the
aggregator for submissions, the indexer for new events. A waiting process costs the chain nothing
while no block comes: where the endpoint offers WebSocket subscriptions (anvil does, on its HTTP
port) it blocks on an `eth_subscribe("newHeads")` notification; elsewhere, or while the socket is
down, it asks `eth_blockNumber` every `poll_seconds`, a call whose cost does not grow with the
chain. On each new head `LedgerFollower` reads the ledger's logs of the new range only
([cursor + 1, head]), so no wait ever re-reads history: its cost is flat in the chain's length.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any

from web3 import Web3
from web3.exceptions import BlockNotFound, Web3RPCError
from web3.providers import HTTPProvider

from ledger.chain.events import LedgerEvent, decode_logs, fetch_events
from ledger.core.polling import POLL_SECONDS

log = logging.getLogger(__name__)

_RECONNECT_SECONDS = 2.0  # after the socket broke, poll at least this long before dialling again
_REQUEST_SECONDS = 30.0  # a read over the socket unanswered this long: the socket is given up
_MAX_MESSAGE_BYTES = 64 << 20  # an eth_getLogs answer over many blocks can be large
_NO_SOCKET: Any = object()  # `NewHeads.request` had no socket to ask over


def websocket_url(w3: Web3) -> str | None:
    """The WebSocket twin of an HTTP JSON-RPC endpoint (same host and port, as anvil serves it)."""
    provider = w3.provider
    if not isinstance(provider, HTTPProvider) or provider.endpoint_uri is None:
        return None
    uri = str(provider.endpoint_uri)
    if uri.startswith("http://"):
        return "ws://" + uri[len("http://") :]
    if uri.startswith("https://"):
        return "wss://" + uri[len("https://") :]
    return None


class NewHeads:
    """Blocks until the chain's head passes a block number, or a timeout passes.

    Subscribed, a wait costs no request at all: the notification carries the new head's number,
    hash and parent hash (`header`), notifications that queued up while the process was busy are
    taken at once (the newest counts), and `request` sends reads over the same socket. Each
    request over HTTP costs ~2 ms of CPU, which at ten nodes woken by every block of a round was a
    large part of the round.
    """

    def __init__(self, w3: Web3, *, poll_seconds: float = POLL_SECONDS, websocket: bool = True) -> None:
        self.w3 = w3
        self.poll_seconds = poll_seconds
        self._url = websocket_url(w3) if websocket else None
        self._socket: Any = None
        self._stack = ExitStack()
        self._broken_at = -_RECONNECT_SECONDS
        self._header: dict[str, Any] | None = None  # the newest head notified
        self._known = -1  # the newest head number seen by notification (-1: ask over HTTP first)
        self._queued: list[str] = []  # notifications read while waiting for a request's answer
        self._request_id = 1

    @property
    def subscribed(self) -> bool:
        """Whether waits are woken by the chain (True) or by polling (False) right now."""
        return self._socket is not None

    def head(self) -> int:
        return int(self.w3.eth.block_number)

    def header(self, number: int) -> dict[str, Any] | None:
        """The notified header (`number`, `hash`, `parentHash`, hex) of block `number` if it is the
        newest notified, once: a header is not reused, so a block re-mined at that height after the
        chain went back is read again."""
        header, self._header = self._header, None
        return header if header is not None and int(header["number"], 16) == number else None

    def wait(self, after: int, timeout: float) -> int:
        """The head number as soon as it is past `after`, else the head when `timeout` seconds have passed."""
        give_up = time.monotonic() + timeout
        self._subscribe()
        known = self._known
        head = self._drain() if self._socket is not None and known >= 0 else -1
        # Ask over HTTP: right after subscribing (a block mined in between still wakes us), without
        # a socket, and when the head past `after` was known before this call rather than notified
        # during it: a chain that went back (evm_revert, a restart from older state) notifies nothing.
        if head < 0 or (head == known and head > after):
            head = self._confirmed_head()
        while head <= after:
            left = give_up - time.monotonic()
            if left <= 0:
                return head
            if self._socket is not None:
                woke = self._next_notification(left)
                head = self._drain() if woke is not None and self._socket is not None else self._confirmed_head()
            else:
                time.sleep(min(self.poll_seconds, left))
                head = self.head()
        return head

    def forget(self) -> None:
        """Drop the notified head: the chain does not have it (any more); the next wait asks over HTTP."""
        self._known, self._header = -1, None

    def _confirmed_head(self) -> int:
        head = self.head()
        if self._socket is not None:
            self._known = head
        return head

    def request(self, method: str, params: list[Any]) -> Any:
        """`method`'s result over the subscription's socket; `_NO_SOCKET` when there is none (or it broke)."""
        if self._socket is None:
            return _NO_SOCKET
        self._request_id += 1
        wanted = self._request_id
        try:
            self._socket.send(json.dumps({"jsonrpc": "2.0", "id": wanted, "method": method, "params": params}))
            while True:
                text = self._socket.recv(timeout=_REQUEST_SECONDS)
                message = json.loads(text)
                if message.get("id") == wanted:
                    break
                self._queued.append(text)  # a notification: the next wait takes it
        except Exception as exc:  # closed, timed out or garbage: the caller asks over HTTP instead
            self._lost(exc)
            return _NO_SOCKET
        if "error" in message:
            raise Web3RPCError(f"{method} failed: {message['error']}", rpc_response=message)
        return message.get("result")

    def close(self) -> None:
        socket, self._socket = self._socket, None
        self._known, self._header, self._queued = -1, None, []
        if socket is not None:
            try:
                self._stack.close()
            except Exception:  # closing a socket whose peer is gone: nothing left to do
                pass

    # ---------------------------------------------------------------- the socket

    def _subscribe(self) -> None:
        if self._socket is not None or self._url is None:
            return
        if time.monotonic() - self._broken_at < _RECONNECT_SECONDS:
            return
        from websockets.sync.client import connect

        stack = ExitStack()
        try:
            socket = stack.enter_context(connect(self._url, open_timeout=2.0, close_timeout=1.0, max_size=_MAX_MESSAGE_BYTES))
            socket.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}))
            reply = json.loads(socket.recv(timeout=2.0))
            if "result" not in reply:
                raise OSError(f"eth_subscribe refused: {reply.get('error')}")
        except Exception as exc:  # no WebSocket here (or not now): poll instead
            stack.close()
            log.debug("no newHeads subscription at %s (%s): polling eth_blockNumber", self._url, exc)
            self._broken_at = time.monotonic()
            return
        self._socket, self._stack = socket, stack

    def _next_notification(self, timeout: float) -> int | None:
        """The block number of the next new-head notification; None on timeout or a broken socket."""
        if self._queued:
            return self._take(self._queued.pop(0))
        try:
            text = self._socket.recv(timeout=timeout)
        except TimeoutError:
            return None
        except Exception as exc:  # closed (the node restarted), or garbage: fall back to polling
            self._lost(exc)
            return None
        return self._take(text)

    def _drain(self) -> int:
        """Take every notification already here without blocking; the newest head number known."""
        while self._socket is not None:
            if self._queued:
                self._take(self._queued.pop(0))
                continue
            try:
                text = self._socket.recv(timeout=0)
            except TimeoutError:
                break
            except Exception as exc:
                self._lost(exc)
                break
            self._take(text)
        return self._known

    def _take(self, text: str) -> int | None:
        try:
            header = json.loads(text)["params"]["result"]
            number = int(header["number"], 16)
        except (KeyError, TypeError, ValueError):
            return None
        self._known, self._header = number, header  # in chain order: the newest is the head, even a lower one
        return number

    def _lost(self, exc: Exception) -> None:
        log.debug("newHeads subscription lost (%s): polling until it can be made again", exc)
        self.close()
        self._broken_at = time.monotonic()


class LedgerFollower:
    """A cursor over one ledger's events: each read hands out the events of blocks not read before.

    Reorg-safe: the follower remembers the hash of the block its cursor stands on. When the chain
    no longer has that block (a reorg, or a devnet restarted from an older state), the events it
    handed out may be gone and others may have taken their place below the cursor: it hands out
    nothing, moves the cursor to the new head and counts a rewind (`rewinds`), and whoever keeps
    state from its events reads that state again from the chain.
    """

    def __init__(self, w3: Web3, address: str, *, from_block: int, heads: NewHeads | None = None) -> None:
        self.w3 = w3
        self.address = Web3.to_checksum_address(address)
        self.cursor = from_block - 1  # the last block whose events were handed out
        self.heads = heads or NewHeads(w3)
        self.rewinds = 0  # times the chain went back under the cursor
        self._cursor_hash: bytes | None = None  # None: not known yet (nothing to compare with)

    @classmethod
    def from_head(cls, w3: Web3, address: str, *, heads: NewHeads | None = None) -> LedgerFollower:
        """A follower that hands out only what happens from now on."""
        follower = cls(w3, address, from_block=0, heads=heads)
        follower.cursor = follower.heads.head()
        return follower

    def read(self) -> list[LedgerEvent]:
        """The events of the blocks mined since the last read (none if no block came)."""
        return self.read_to(self.heads.head())

    def wait(self, timeout: float) -> list[LedgerEvent]:
        """Block until a new block (or `timeout`), then hand out its events (possibly none)."""
        return self.read_to(self.heads.wait(after=self.cursor, timeout=timeout))

    def read_to(self, head: int) -> list[LedgerEvent]:
        """The events of blocks (cursor, head]; the cursor moves to `head`.

        One block read per call with new blocks (the head's hash, and its parent's when it is the
        next block), so a reorg under the cursor is seen; none when nothing is new.
        """
        if head == self.cursor:
            return []
        block = self._block(head)
        if block is None:  # the head moved back between the two reads: seen on the next one
            self.heads.forget()
            return []
        block_hash, parent_hash = block
        if head < self.cursor or not self._on_chain(head, parent_hash):
            self.heads.forget()
            log.info("the chain went back under block %d (head %d): reading it again from there", self.cursor, head)
            self.rewinds += 1
            self.cursor, self._cursor_hash = head, block_hash
            return []
        found = self._events(self.cursor + 1, head)
        self.cursor, self._cursor_hash = head, block_hash
        return found

    def _block(self, number: int) -> tuple[bytes, bytes] | None:
        """(hash, parent hash) of block `number`: from its new-head notification when there is one."""
        header = self.heads.header(number)
        if header is not None:
            return bytes.fromhex(header["hash"][2:]), bytes.fromhex(header["parentHash"][2:])
        try:
            block = self.w3.eth.get_block(number)
        except BlockNotFound:
            return None
        return bytes(block["hash"]), bytes(block["parentHash"])

    def _events(self, first: int, last: int) -> list[LedgerEvent]:
        """The ledger's events in [first, last]: over the subscription's socket when there is one."""
        logs = self.heads.request("eth_getLogs", [{"address": self.address, "fromBlock": hex(first), "toBlock": hex(last)}])
        if logs is _NO_SOCKET:
            return fetch_events(self.w3, self.address, first, last)
        return list(decode_logs(self.w3, logs))

    def _on_chain(self, head: int, parent_hash: bytes) -> bool:
        """Whether the block the cursor stands on is still the chain's block at that height."""
        if self._cursor_hash is None:
            return True
        if head == self.cursor + 1:
            return parent_hash == self._cursor_hash
        try:
            return bytes(self.w3.eth.get_block(self.cursor)["hash"]) == self._cursor_hash
        except BlockNotFound:
            return False

    def close(self) -> None:
        self.heads.close()


def of_type(found: Iterable[LedgerEvent], *types: type[LedgerEvent]) -> list[Any]:
    """The events in `found` of the given types, in chain order."""
    return [event for event in found if isinstance(event, types)]
