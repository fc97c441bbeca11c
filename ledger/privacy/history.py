"""What a node spent before a round: its earlier updates, read from the chain and the blob store.

Which updates a node published comes from `UpdateSubmitted` events (never from the node's word);
what each spent comes from the claim inside the blob the event names, re-hashed on read. A blob
that cannot be read or holds no claim on policy is `Unaccountable`, and `judge_claim` refuses the
node's later claims: its ε is unknown. The aggregator and the node keep a `PrivacyBook` (it reads
each round's events and blobs once); the auditor calls `earlier_entries` on the events it read.
`PrivacyBook.spent` tells the aggregator which nodes will not publish again, so it does not wait for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ledger.chain import events
from ledger.chain.client import LedgerClient
from ledger.core.encoding import DecodeError, read_update_metadata
from ledger.core.hashing import sha256_hex
from ledger.core.policy import PrivacyPolicy
from ledger.privacy.claims import ClaimError
from ledger.privacy.accountant import Spend
from ledger.privacy.judge import Entry, Unaccountable, next_claim, over_budget, spend_of
from ledger.store.base import BlobStore, BlobStoreError


def entry_of(submission: events.UpdateSubmitted, store: BlobStore, policy: PrivacyPolicy) -> Entry:
    """What one published update spent, or why that cannot be known."""
    try:
        blob = store.get(submission.update_hash)
    except BlobStoreError as exc:
        return Unaccountable(submission.update_hash, submission.round, f"its blob cannot be read: {exc}", transient=True)
    if sha256_hex(blob) != submission.update_hash:  # never trust a store
        return Unaccountable(submission.update_hash, submission.round, "the store served bytes that do not hash to its name")
    try:
        _, claim = read_update_metadata(blob)
        return spend_of(claim, policy, num_samples=submission.num_samples)
    except (DecodeError, ClaimError) as exc:
        return Unaccountable(submission.update_hash, submission.round, str(exc))


def earlier_entries(
    submissions: Iterable[events.UpdateSubmitted],
    store: BlobStore,
    policy: PrivacyPolicy,
    *,
    before_round: int,
    nodes: Iterable[str],
    known: dict[str, Entry] | None = None,
) -> dict[str, list[Entry]]:
    """Each of `nodes`' updates in rounds before `before_round`, in round order, with what each spent.

    `known` caches entries by update hash across calls (transient failures are not kept).
    """
    wanted = {node.lower(): node for node in nodes}
    history: dict[str, list[Entry]] = {node: [] for node in wanted.values()}
    for submission in sorted(submissions, key=lambda s: s.round):
        node = wanted.get(submission.node.lower())
        if node is None or submission.round >= before_round:
            continue
        entry = known.get(submission.update_hash) if known is not None else None
        if entry is None:
            entry = entry_of(submission, store, policy)
            if known is not None and not (isinstance(entry, Unaccountable) and entry.transient):
                known[submission.update_hash] = entry
        history[node].append(entry)
    return history


@dataclass
class PrivacyBook:
    """`earlier_entries` kept current from the chain: each call reads only the events since the last."""

    client: LedgerClient
    store: BlobStore
    policy: PrivacyPolicy
    _submissions: list[events.UpdateSubmitted] = field(default_factory=list)
    _known: dict[str, Entry] = field(default_factory=dict)
    _next_block: int = 0

    def earlier(self, round_number: int, nodes: Iterable[str]) -> dict[str, list[Entry]]:
        head = int(self.client.w3.eth.block_number)
        if head >= self._next_block:
            self._submissions += self.client.events(self._next_block, head, event_type=events.UpdateSubmitted)
            self._next_block = head + 1
        return earlier_entries(
            self._submissions, self.store, self.policy, before_round=round_number, nodes=nodes, known=self._known
        )

    def spent(self, round_number: int, nodes: Iterable[str]) -> list[str]:
        """Those of `nodes` that will not publish in `round_number`: the node's own rule (`next_claim`,
        `over_budget`) on its earlier updates, with the sample count of its last one.

        A node with no earlier update, or one that cannot be accounted for, is not counted as spent.
        """
        nodes = list(nodes)
        history = self.earlier(round_number, nodes)
        samples = {s.node.lower(): s.num_samples for s in sorted(self._submissions, key=lambda s: s.round) if s.round < round_number}
        spent = []
        for node in nodes:
            entries = history[node]
            spends = [entry for entry in entries if isinstance(entry, Spend)]
            if not spends or len(spends) != len(entries):
                continue
            upcoming = next_claim(self.policy, num_samples=samples[node.lower()], earlier=spends)
            if over_budget(self.policy, upcoming.epsilon):
                spent.append(node)
        return spent
