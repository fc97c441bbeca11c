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

from eth_typing import HexStr

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


@dataclass(frozen=True)
class _HeadView:
    """What one head read found: the mirror's record and the facts taken from it under its lock."""

    record: ChainRecord
    head: int
    head_hash: str
    role_changes: int
    contiguous: bool
    opened: int  # the highest round opened in the record (0: none)


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
        self._reads = threading.Condition()  # head reads: started, done, one at a time
        self._started = self._done = 0
        self._reading = False
        self._view: _HeadView | None = None

    def standing(self, signer: str) -> Standing:
        """`signer`'s roles as of a head block read after this call began (see the module docstring)."""
        view = self._fresh_view()
        at = HexStr("0x" + view.head_hash)  # pinned by hash: the very block the head read found
        with self._lock:
            if not view.contiguous or view.record is not self._record or view.role_changes != self._role_changes:
                self._roles.clear()
                self._record, self._role_changes = (view.record if view.contiguous else None), view.role_changes
            roles = self._roles.get(signer)
            if roles is None:
                roles = self._read_roles(signer, at)
                if len(self._roles) >= MAX_SIGNERS:
                    self._roles.clear()
                if view.contiguous:
                    self._roles[signer] = roles
            round_number = self._last_round(view, at) if roles.is_node else 0
        return Standing(roles.is_node, roles.is_aggregator, roles.is_auditor, round_number, view.head)

    def _fresh_view(self) -> _HeadView:
        """The mirror's record at a head read that *started* after this call: concurrent uploads
        share one read (those arriving while a read is under way wait for, and share, the next)."""
        with self._reads:
            wanted = self._started + 1
            while self._done < wanted:
                if self._reading:
                    self._reads.wait()
                    continue
                self._started += 1
                self._reading = True
                generation = self._started
                self._reads.release()
                try:
                    view = self._read_head()
                finally:
                    self._reads.acquire()
                    self._reading = False
                    self._reads.notify_all()
                self._view, self._done = view, generation
            assert self._view is not None
            return self._view

    def _read_head(self) -> _HeadView:
        with self.mirror.lock:
            record = self.mirror.record()
            assert record.block_hash is not None
            # A record that starts after our last answer could hide a role event in between.
            contiguous = record.block_number + 1 >= self.mirror.from_block
            opened = max(record.opened, default=0)
            return _HeadView(record, record.block_number, record.block_hash, record.role_changes, contiguous, opened)

    def _last_round(self, view: _HeadView, at: HexStr) -> int:
        """Rounds open in order, so the highest RoundOpened in the record is the contract's last
        round; only a record that starts after every opening has to ask (once per head)."""
        if view.opened and view.contiguous:
            return view.opened
        if self._round_at != view.head_hash:
            self._round = self.ledger.counters(block=at).last_round
            self._round_at = view.head_hash
        return self._round

    def _read_roles(self, signer: str, at: HexStr) -> _Roles:
        self.reads += 1
        is_node = self.ledger.is_node(signer, block=at)
        if is_node:  # a node needs nothing else to upload
            return _Roles(True, False, False)
        is_aggregator = self.ledger.is_aggregator(signer, block=at)
        return _Roles(False, is_aggregator, not is_aggregator and self.ledger.is_auditor(signer, block=at))
