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
from web3.exceptions import BlockNotFound
from web3.providers import HTTPProvider

from ledger.chain.events import LedgerEvent, fetch_events
from ledger.core.polling import POLL_SECONDS

log = logging.getLogger(__name__)

_RECONNECT_SECONDS = 2.0  # after the socket broke, poll at least this long before dialling again


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
    """Blocks until the chain's head passes a block number, or a timeout passes."""

    def __init__(self, w3: Web3, *, poll_seconds: float = POLL_SECONDS, websocket: bool = True) -> None:
        self.w3 = w3
        self.poll_seconds = poll_seconds
        self._url = websocket_url(w3) if websocket else None
        self._socket: Any = None
        self._stack = ExitStack()
        self._broken_at = -_RECONNECT_SECONDS

    @property
    def subscribed(self) -> bool:
        """Whether waits are woken by the chain (True) or by polling (False) right now."""
        return self._socket is not None

    def head(self) -> int:
        return int(self.w3.eth.block_number)

    def wait(self, after: int, timeout: float) -> int:
        """The head number as soon as it is past `after`, else the head when `timeout` seconds have passed."""
        give_up = time.monotonic() + timeout
        self._subscribe()
        head = self.head()  # read after subscribing: a block mined in between still wakes us
        while head <= after:
            left = give_up - time.monotonic()
            if left <= 0:
                return head
            if self._socket is not None:
                woke = self._next_notification(left)
                head = woke if woke is not None else self.head()
            else:
                time.sleep(min(self.poll_seconds, left))
                head = self.head()
        return head

    def close(self) -> None:
        socket, self._socket = self._socket, None
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
            socket = stack.enter_context(connect(self._url, open_timeout=2.0, close_timeout=1.0, max_size=1 << 20))
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
        try:
            message = json.loads(self._socket.recv(timeout=timeout))
        except TimeoutError:
            return None
        except Exception as exc:  # closed (the node restarted), or garbage: fall back to polling
            log.debug("newHeads subscription lost (%s): polling until it can be made again", exc)
            self.close()
            self._broken_at = time.monotonic()
            return None
        try:
            return int(message["params"]["result"]["number"], 16)
        except (KeyError, TypeError, ValueError):
            return None


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
        try:
            block = self.w3.eth.get_block(head)
        except BlockNotFound:  # the head moved back between the two reads: seen on the next one
            return []
        if head < self.cursor or not self._on_chain(head, block):
            log.info("the chain went back under block %d (head %d): reading it again from there", self.cursor, head)
            self.rewinds += 1
            self.cursor, self._cursor_hash = head, bytes(block["hash"])
            return []
        found = fetch_events(self.w3, self.address, self.cursor + 1, head)
        self.cursor, self._cursor_hash = head, bytes(block["hash"])
        return found

    def _on_chain(self, head: int, block: Any) -> bool:
        """Whether the block the cursor stands on is still the chain's block at that height."""
        if self._cursor_hash is None:
            return True
        if head == self.cursor + 1:
            return bytes(block["parentHash"]) == self._cursor_hash
        try:
            return bytes(self.w3.eth.get_block(self.cursor)["hash"]) == self._cursor_hash
        except BlockNotFound:
            return False

    def close(self) -> None:
        self.heads.close()


def of_type(found: Iterable[LedgerEvent], *types: type[LedgerEvent]) -> list[Any]:
    """The events in `found` of the given types, in chain order."""
    return [event for event in found if isinstance(event, types)]
