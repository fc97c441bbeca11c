"""Every ledger event, read once and kept up to date per head block: the chain's own record, in memory.

`ChainMirror.record()` costs one `eth_getBlockByNumber("latest")` when the head has not moved and
one `eth_getLogs` over the new blocks when it has; after a reorg it reads the new branch from the
start. The record (`ChainRecord`) arranges the events for the questions asked of them: the API
compares index rows with it (`ledger.index.consistency`), the auditor derives a version's facts
from it (`ledger.audit.facts`), and an auditor's watcher follows new versions with it.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

from web3 import Web3
from web3.exceptions import Web3RPCError
from web3.providers import JSONBaseProvider
from web3.types import RPCEndpoint

from ledger.chain import events as ev
from ledger.core.merkle import merkle_root

GOVERNANCE = (ev.PolicyChanged, ev.VersionAttested, ev.AttestationResolved, ev.AuditorSet)
# Every event the contract emits when an account's roles change (each role setter emits one of them).
ROLE_CHANGES = (ev.NodeRegistered, ev.NodeRevoked, ev.AggregatorSet, ev.AuditorSet, ev.AdminTransferred)


@dataclass
class ChainRecord:
    """Every ledger event up to `block_number`, arranged for the comparisons below."""

    block_number: int = -1
    block_hash: str | None = None
    versions: dict[str, ev.ModelCommitted] = field(default_factory=dict)
    depth: dict[str, int] = field(default_factory=dict)
    committed_round: dict[int, ev.ModelCommitted] = field(default_factory=dict)
    opened: dict[int, ev.RoundOpened] = field(default_factory=dict)
    abandoned: dict[int, ev.RoundAbandoned] = field(default_factory=dict)
    submissions: dict[int, dict[str, ev.UpdateSubmitted]] = field(default_factory=dict)  # round → node →
    rejections: dict[int, dict[str, ev.UpdateRejected]] = field(default_factory=dict)
    by_node: dict[str, list[ev.UpdateSubmitted]] = field(default_factory=dict)
    registrations: dict[str, list[ev.NodeRegistered | ev.NodeRevoked]] = field(default_factory=dict)
    event_blocks: list[int] = field(default_factory=list)  # one entry per event, ascending
    attestations: list[ev.VersionAttested] = field(default_factory=list)  # chain order
    resolutions: dict[tuple[str, str], ev.AttestationResolved] = field(default_factory=dict)  # (model, auditor) →
    governance: list[ev.LedgerEvent] = field(default_factory=list)  # policy, attestations, auditors: chain order
    role_changes: int = 0  # ROLE_CHANGES events seen: unchanged means every account's roles are too
    _expected: dict[int, frozenset[tuple[str, str]] | None] = field(default_factory=dict)
    _ordered: dict[int, list[tuple[str, str]]] = field(default_factory=dict)

    def add(self, event: ev.LedgerEvent) -> None:
        self.event_blocks.append(event.ref.block_number)
        if isinstance(event, ROLE_CHANGES):
            self.role_changes += 1
        if isinstance(event, GOVERNANCE):
            self.governance.append(event)
        if isinstance(event, ev.ModelCommitted):
            self.versions[event.model_hash] = event
            parent_depth = self.depth.get(event.parent_hash) if event.parent_hash else None
            self.depth[event.model_hash] = 0 if parent_depth is None else parent_depth + 1
            if event.round > 0:
                self.committed_round[event.round] = event
        elif isinstance(event, ev.RoundOpened):
            self.opened[event.round] = event
        elif isinstance(event, ev.RoundAbandoned):
            self.abandoned[event.round] = event
        elif isinstance(event, ev.UpdateSubmitted):
            self.submissions.setdefault(event.round, {})[event.node] = event
            self.by_node.setdefault(event.node, []).append(event)
        elif isinstance(event, ev.UpdateRejected):
            self.rejections.setdefault(event.round, {})[event.node] = event
        elif isinstance(event, (ev.NodeRegistered, ev.NodeRevoked)):
            self.registrations.setdefault(event.node, []).append(event)
        elif isinstance(event, ev.VersionAttested):
            self.attestations.append(event)
        elif isinstance(event, ev.AttestationResolved):
            self.resolutions[(event.model_hash, event.auditor)] = event

    def expected_included(self, round_number: int) -> frozenset[tuple[str, str]] | None:
        """(node, update hash) of the round's unrejected submissions when they give the committed
        root and count: the chain's own answer to "which were included"; None when they do not."""
        if round_number in self._expected:
            return self._expected[round_number]
        version = self.committed_round.get(round_number)
        answer: frozenset[tuple[str, str]] | None = None
        if version is not None and version.included_root is not None:
            rejected = self.rejections.get(round_number, {})
            unrejected = frozenset(
                (node, event.update_hash)
                for node, event in self.submissions.get(round_number, {}).items()
                if node not in rejected
            )
            if (
                unrejected
                and len(unrejected) == version.included_count
                and merkle_root(bytes.fromhex(h) for _, h in unrejected).hex() == version.included_root
            ):
                answer = unrejected
        self._expected[round_number] = answer
        return answer

    def expected_order(self, round_number: int) -> list[tuple[str, str]] | None:
        """`expected_included` as (update hash, node), in the order the index pages it (by hash, then node)."""
        if round_number not in self._ordered:
            expected = self.expected_included(round_number)
            if expected is None:
                return None
            self._ordered[round_number] = sorted((update_hash, node) for node, update_hash in expected)
        return self._ordered[round_number]


class ChainMirror:
    """The ledger's events, read once and extended as the chain grows; rebuilt after a reorg.

    `record()` costs one `eth_getBlockByNumber("latest")` when the head has not moved, and one
    `eth_getLogs` over the new blocks when it has. A reader that can tolerate a head up to
    `max_age` seconds old (the API, serving many requests a second) skips even that, unless it
    needs a block the record has not reached. Callers hold `lock` while they read the record.
    """

    def __init__(self, w3: Web3, address: str, *, from_block: int = 0) -> None:
        self.w3 = w3
        self.address = Web3.to_checksum_address(address)
        self.from_block = from_block
        self.lock = threading.RLock()
        self._record = ChainRecord()
        self._read_at = -math.inf  # monotonic time the head was last read
        self._hashes: dict[tuple[str, int], str | None] = {}  # (head hash, number) → block hash

    def record(self, *, max_age: float = 0.0, at_least: int = -1) -> ChainRecord:
        """The events up to the current head (call with `lock` held); the head read at most
        `max_age` seconds ago will do if the record reaches block `at_least`."""
        current = self._record
        if time.monotonic() - self._read_at < max_age and current.block_number >= at_least:
            return current
        head, head_hash = self._latest()
        self._read_at = time.monotonic()
        if head_hash == current.block_hash:
            return current
        if current.block_hash is not None and self.block_hash(current.block_number, head_hash) != current.block_hash:
            current = ChainRecord()  # the block we read up to is gone: read the new branch from the start
        start = max(current.block_number + 1, self.from_block)
        if start <= head:
            for event in ev.fetch_events(self.w3, self.address, start, head):
                current.add(event)
            current._expected.clear()
            current._ordered.clear()
        current.block_number, current.block_hash = head, head_hash
        self._record = current
        return current

    def block_hash(self, number: int, head_hash: str) -> str | None:
        """The hash of block `number` on the branch whose head is `head_hash` (cached per head)."""
        key = (head_hash, number)
        if key not in self._hashes:
            if len(self._hashes) > 256:
                self._hashes.clear()
            try:
                self._hashes[key] = bytes(self.w3.eth.get_block(number)["hash"]).hex()
            except Exception:  # BlockNotFound: a number beyond the head
                self._hashes[key] = None
        return self._hashes[key]

    def _latest(self) -> tuple[int, str]:
        """(number, hash) of the head; straight from a JSON-RPC provider when there is one (web3's
        formatting of a whole block costs more than the request)."""
        provider = self.w3.provider
        if isinstance(provider, JSONBaseProvider):
            response = provider.make_request(RPCEndpoint("eth_getBlockByNumber"), ["latest", False])
            if response.get("error") or not response.get("result"):
                raise Web3RPCError(f"eth_getBlockByNumber failed: {response.get('error')}", rpc_response=response)
            block = response["result"]
            return int(block["number"], 16), block["hash"].removeprefix("0x")
        latest = self.w3.eth.get_block("latest")
        return int(latest["number"]), bytes(latest["hash"]).hex()
