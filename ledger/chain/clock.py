"""Chain time, the only clock deadlines are judged by: block timestamps, never the wall clock.

A round's deadline is compared with `block.timestamp` by the contract, so every decision about
it is made against a block: "has it passed?" against the latest block, "how long is left?" against
the block the chain would mine next. A transaction that needs the deadline passed (abandonRound,
finalizeRound below quorum) is sent only once a block past the deadline exists, so its gas
estimate (run against the latest block) and its execution agree.

An idle anvil mines only when a transaction arrives, so its latest block can lag far behind. On
the devnet the clock therefore mines an empty block (`evm_mine`) once the chain's own pending
block would land past the deadline; on the in-process chain, where every party runs in this one
process and nothing can arrive while it waits, waiting for a deadline moves chain time to it; on
any other chain it waits for the next block.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from web3 import Web3
from web3.types import RPCEndpoint

from ledger.chain.devkeys import DEV_CHAIN_ID
from ledger.chain.keys import is_in_process_chain
from ledger.core.polling import POLL_SECONDS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Head:
    """A block's number and timestamp (unix seconds)."""

    number: int
    timestamp: int


class ChainClock:
    """Reads chain time from `w3`, and on development chains makes it advance when a deadline needs it."""

    def __init__(self, w3: Web3, *, poll_seconds: float = POLL_SECONDS) -> None:
        self.w3 = w3
        self.poll_seconds = poll_seconds
        self.in_process = is_in_process_chain(w3)
        self.devnet = not self.in_process and int(w3.eth.chain_id) == DEV_CHAIN_ID
        self._timestamps: dict[int, int] = {}

    def head(self) -> Head:
        """The latest block."""
        return _head(self.w3.eth.get_block("latest"))

    def timestamp_of(self, number: int) -> int:
        """Block `number`'s timestamp (blocks do not change their time: asked once, remembered)."""
        cached = self._timestamps.get(number)
        if cached is None:
            if len(self._timestamps) > 1024:
                self._timestamps.clear()
            cached = self._timestamps[number] = int(self.w3.eth.get_block(number)["timestamp"])
        return cached

    def forget(self) -> None:
        """Drop remembered block times: the chain went back, and its block numbers will be mined again."""
        self._timestamps.clear()

    def now(self) -> int:
        """The latest block's timestamp: what a deadline is judged against right now."""
        return self.head().timestamp

    def next_timestamp(self) -> int:
        """The timestamp the next block would carry (the pending block's, where the chain reports one)."""
        try:
            return int(self.w3.eth.get_block("pending")["timestamp"])
        except Exception:  # some nodes refuse "pending": the latest block is the best we know
            return self.now()

    def seconds_left(self, deadline: int) -> int:
        """Seconds of chain time until `deadline` (0 once the next block would be past it)."""
        return max(deadline - self.next_timestamp(), 0)

    def too_late(self, deadline: int) -> bool:
        """Whether a transaction sent now would land after `deadline` (the next block is past it)."""
        return self.next_timestamp() > deadline

    def passed(self, deadline: int) -> Head | None:
        """The latest block if its timestamp is past `deadline` (so a transaction judged by it is too)."""
        head = self.head()
        return head if head.timestamp > deadline else None

    def advance_past(self, deadline: int, *, next_timestamp: int | None = None) -> None:
        """One step of waiting for `deadline`: on a dev chain, make the block that passes it exist.

        `next_timestamp`, when the caller just read it, saves asking the chain again.
        """
        if self.in_process:
            tester: Any = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
            if self.now() <= deadline:
                tester.time_travel(deadline + 1)
                tester.mine_blocks(1)
            return
        if self.devnet and (next_timestamp if next_timestamp is not None else self.next_timestamp()) > deadline:
            self.w3.provider.make_request(RPCEndpoint("evm_mine"), [])
            log.debug("mined an empty block to carry chain time past %d", deadline)

    def wait_past(self, deadline: int, *, timeout: float | None = None) -> Head:
        """The first block past `deadline`, mining it on a dev chain once chain time gets there.

        `timeout` (wall seconds) bounds only how long this process waits; the decision stays the chain's.
        """
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            head = self.passed(deadline)
            if head is not None:
                return head
            self.advance_past(deadline)
            if (head := self.passed(deadline)) is not None:
                return head
            if give_up is not None and time.monotonic() > give_up:
                from ledger.core.polling import WaitTimeout

                raise WaitTimeout(f"gave up after {timeout:.1f}s waiting for chain time to pass {deadline}")
            time.sleep(self.poll_seconds)


def _head(block: Any) -> Head:
    return Head(number=int(block["number"]), timestamp=int(block["timestamp"]))
