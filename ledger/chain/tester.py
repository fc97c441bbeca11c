"""The in-process chain's provider: web3's py-evm provider, one request at a time, with the calls a
ledger client makes most answered by eth-tester directly.

Through web3's contract layer and its eth-tester middleware a view call cost ~15 ms of CPU against
~5 ms of EVM work: the middleware asks the chain for its accounts on every call to guess a sender,
and the contract layer re-derives each function's selector. The client encodes calls from the ABI
(`ledger.chain.calldata`) and hands them here, as it hands them to a JSON-RPC endpoint over HTTP.
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from web3 import EthereumTesterProvider
from web3.types import RPCEndpoint, RPCResponse

from ledger.chain.errors import LedgerError, TransactionReverted, decode_revert

T = TypeVar("T")


class SerializedTesterProvider(EthereumTesterProvider):
    """web3's py-evm provider, one request at a time: py-evm is not thread-safe, and parties
    sharing the chain from threads (the demo's nodes train side by side) must not interleave."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self._reader: str | None = None

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with self._lock:
            return super().make_request(method, params)

    def call(self, sender: str | None, to: str, data: str, block: int | str | bytes = "latest") -> bytes:
        """`eth_call` of 0x-hex `data` at `block` (a number, a tag such as "latest", or a block
        hash); a revert raises its typed error (`ledger.chain.errors`). Without a `sender`, the
        chain's first funded account calls (eth-tester wants one that could pay for the call's gas)."""
        transaction = {"from": sender or self._any_account(), "to": to, "data": data}
        answer = self._locked(lambda tester: tester.call(transaction, _block_number(tester, block)), "eth_call")
        return bytes.fromhex(answer.removeprefix("0x"))

    def pending_nonce(self, address: str) -> int:
        return int(self._locked(lambda tester: tester.get_nonce(address, "pending"), "nonce"))

    def pending_base_fee(self) -> int:
        block = self._locked(lambda tester: tester.get_block_by_number("pending"), "pending block")
        return int(block.get("base_fee_per_gas") or 0)

    def logs(self, address: str, from_block: int | str, to_block: int | str, topics: Sequence[Any]) -> list[dict[str, Any]]:
        """`eth_getLogs` read from py-evm's receipts block by block, as JSON-RPC spells a log.

        eth-tester's own finds each transaction of each block again by scanning the chain back from
        its head (O(chain) per log, so reading a history was quadratic), and numbers logs within
        their transaction; here `logIndex` is the log's position in its block, as on any node.
        `topics` filters as in JSON-RPC: per position None, one 0x hash or a list of them.
        """
        wanted = bytes.fromhex(address.removeprefix("0x"))
        filters = [_topic_set(position) for position in topics]
        found: list[dict[str, Any]] = []
        with self._lock:
            chain = self._tester().backend.chain
            head = chain.get_canonical_head().block_number
            first, last = _tag_number(from_block, head), min(_tag_number(to_block, head), head)
            for number in range(max(0, first), last + 1):
                block = chain.get_canonical_block_by_number(number)
                position = 0
                for transaction, receipt in zip(block.transactions, block.get_receipts(chain.chaindb)):
                    for entry in receipt.logs:
                        topics_bytes = [topic.to_bytes(32, "big") for topic in entry.topics]
                        if entry.address == wanted and _topics_match(topics_bytes, filters):
                            found.append(
                                {
                                    "address": address, "topics": topics_bytes, "data": bytes(entry.data),
                                    "blockNumber": number, "blockHash": bytes(block.hash),
                                    "transactionHash": bytes(transaction.hash), "logIndex": position,
                                }
                            )  # fmt: skip
                        position += 1
        return found

    def _any_account(self) -> str:
        """A sender for view calls (eth-tester wants one; no view reads it), asked for once."""
        if self._reader is None:
            self._reader = str(self._locked(lambda tester: tester.get_accounts()[0], "accounts"))
        return self._reader

    def _tester(self) -> Any:
        tester = self.ethereum_tester
        assert tester is not None  # set by EthereumTesterProvider.__init__
        return tester

    def _locked(self, request: Callable[[Any], T], what: str) -> T:
        from eth_tester.exceptions import TransactionFailed

        with self._lock:
            try:
                return request(self._tester())
            except TransactionFailed as exc:
                raise _revert(exc, what) from exc


def _tag_number(block: int | str, head: int) -> int:
    """A block number or tag as a number: "earliest" is 0, any other tag the head."""
    if isinstance(block, str):
        return 0 if block == "earliest" else head
    return int(block)


def _topic_set(position: Any) -> frozenset[bytes] | None:
    if position is None:
        return None
    values = position if isinstance(position, (list, tuple)) else [position]
    return frozenset(value if isinstance(value, bytes) else bytes.fromhex(value.removeprefix("0x")) for value in values)


def _topics_match(topics: list[bytes], filters: list[frozenset[bytes] | None]) -> bool:
    if len(filters) > len(topics):
        return False
    return all(wanted is None or topic in wanted for topic, wanted in zip(topics, filters))


def _block_number(tester: Any, block: int | str | bytes) -> int | str:
    """eth-tester takes numbers and tags; a block hash names the block of that number."""
    if isinstance(block, (bytes, bytearray)):
        block = "0x" + bytes(block).hex()
    if isinstance(block, str) and block.startswith("0x") and len(block) == 66:
        return int(tester.get_block_by_hash(block)["number"])
    return block


def _revert(exc: Exception, what: str) -> LedgerError:
    """eth-tester's TransactionFailed carries the revert bytes as their repr (`"b'\\x88<...'"`)."""
    detail = exc.args[0] if exc.args else b""
    if isinstance(detail, str) and detail.startswith(("b'", 'b"')):
        try:
            detail = ast.literal_eval(detail)
        except (ValueError, SyntaxError):
            pass
    if isinstance(detail, bytes):
        return decode_revert(detail)
    return TransactionReverted(f"{what} reverted: {detail}")
