"""Who may upload, asked of the chain on every upload but read again only when a role can have changed.

Each upload reads the head block (`ChainMirror.record()`: one `eth_getBlockByNumber`, plus one
`eth_getLogs` over new blocks, shared by all requests). A signer's roles, read once at some block,
stay the answer for as long as no role event (`ledger.chain.mirror.ROLE_CHANGES`: every role setter
of the contract emits one) has landed since; the round number is read once per head block. So a
revoked key is refused from the first block where it is revoked, exactly as if every upload asked
the contract, and after a reorg (the mirror rebuilds its record) everything is read again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ledger.chain.client import LedgerClient
from ledger.chain.mirror import ChainMirror, ChainRecord

MAX_SIGNERS = 4096  # answers kept; strangers' signatures cannot grow the cache past this


@dataclass(frozen=True)
class Standing:
    """A signer's roles at head block `block`, and the last round opened then (the quota's key)."""

    is_node: bool
    is_aggregator: bool
    is_auditor: bool
    round: int
    block: int

    @property
    def may_upload(self) -> bool:
        return self.is_node or self.is_aggregator or self.is_auditor


@dataclass(frozen=True)
class _Roles:
    is_node: bool
    is_aggregator: bool
    is_auditor: bool


class RoleBook:
    """Signers' roles per the chain's head, cached while no role event lands (see the module docstring)."""

    def __init__(self, ledger: LedgerClient, mirror: ChainMirror) -> None:
        self.ledger = ledger
        self.mirror = mirror
        self.reads = 0  # role reads from the contract (one per signer after each role change)
        self._lock = threading.Lock()
        self._record: ChainRecord | None = None  # the record (and its role-change count) answers were read under
        self._role_changes = -1
        self._roles: dict[str, _Roles] = {}
        self._round_at: str | None = None  # head hash the round number was read at
        self._round = 0

    def standing(self, signer: str) -> Standing:
        """`signer`'s roles as of the current head block (read now; see the module docstring)."""
        with self.mirror.lock:
            record = self.mirror.record()
            head, head_hash = record.block_number, record.block_hash
            # A record that starts after our last answer could hide a role event in between.
            contiguous = head + 1 >= self.mirror.from_block
        at = "0x" + head_hash if head_hash is not None else head
        with self._lock:
            if not contiguous or record is not self._record or record.role_changes != self._role_changes:
                self._roles.clear()
                self._record, self._role_changes = (record if contiguous else None), record.role_changes
            roles = self._roles.get(signer)
            if roles is None:
                roles = self._read_roles(signer, at)
                if len(self._roles) >= MAX_SIGNERS:
                    self._roles.clear()
                if contiguous:
                    self._roles[signer] = roles
            if roles.is_node and self._round_at != head_hash:
                self._round = self.ledger.counters(block=at).last_round
                self._round_at = head_hash
            round_number = self._round if roles.is_node else 0
        return Standing(roles.is_node, roles.is_aggregator, roles.is_auditor, round_number, head)

    def _read_roles(self, signer: str, at: int | str) -> _Roles:
        self.reads += 1
        is_node = self.ledger.is_node(signer, block=at)
        if is_node:  # a node needs nothing else to upload
            return _Roles(True, False, False)
        is_aggregator = self.ledger.is_aggregator(signer, block=at)
        return _Roles(False, is_aggregator, not is_aggregator and self.ledger.is_auditor(signer, block=at))
