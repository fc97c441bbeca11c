"""Is the index still what the chain says? Index rows compared with the ledger's events, field by field.

The index is a cache, and a cache can be edited, half-written or left on a dropped branch. Before
the API answers from it, the rows of the answer are compared with the chain's own record
(`ledger.chain.mirror.ChainRecord`: every ledger event, kept per head block) as of the block
the index says it reached, so a lagging index is not a wrong one; what a version row took from its
metadata blob (rule, metrics, ε, policy) is compared with that blob, whose hash the chain holds.
Each disagreement becomes a
`Difference` naming the row, the field, and both values; `fedledger index rebuild` repairs them.

Which updates a version included is on chain only as a Merkle root and a count. When the round's
submissions minus its on-chain rejections give exactly that root and count (what an honest
aggregator commits), that set is the chain's answer and the index must mark exactly it; otherwise
the index's included set must at least give the root and count, and name no rejected or
never-submitted update.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.chain import events as ev
from ledger.chain.mirror import ChainRecord
from ledger.index.indexer import MetadataSummary, parse_metadata
from ledger.store.base import BlobStore, BlobStoreError
from ledger.core.merkle import merkle_root
from ledger.core.reasons import RejectReason


@dataclass(frozen=True)
class Difference:
    """One way the index disagrees with the chain: which row (`what`, `key`), which field, both values."""

    what: str  # "cursor", "version", "round", "submission", "inclusion", "node"
    key: str
    field: str
    index: Any
    chain: Any
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "key": self.key,
            "field": self.field,
            "index": self.index,
            "chain": self.chain,
            "detail": self.detail,
        }


def _visible(event: ev.LedgerEvent | None, as_of: int) -> bool:
    return event is not None and event.ref.block_number <= as_of


# --------------------------------------------------------------------------- comparisons


def summary_differences(record: ChainRecord, as_of: int, counts: Any) -> list[Difference]:
    """The index's counts (`queries.Counts`) against the chain's, as of block `as_of`."""
    nodes = [
        [e for e in history if e.ref.block_number <= as_of] for history in record.registrations.values()
    ]
    rounds = [number for number, event in record.opened.items() if event.ref.block_number <= as_of]
    finalized = sum(1 for r in rounds if _visible(record.committed_round.get(r), as_of))
    abandoned = sum(1 for r in rounds if _visible(record.abandoned.get(r), as_of))
    chain = {
        "nodes": sum(1 for history in nodes if history),
        "active_nodes": sum(1 for history in nodes if history and isinstance(history[-1], ev.NodeRegistered)),
        "rounds": len(rounds),
        "rounds_by_state": {
            state: n for state, n in (("open", len(rounds) - finalized - abandoned), ("finalized", finalized), ("abandoned", abandoned)) if n
        },
        "updates": sum(1 for by_node in record.submissions.values() for e in by_node.values() if e.ref.block_number <= as_of),
        "rejected_updates": sum(1 for by_node in record.rejections.values() for e in by_node.values() if e.ref.block_number <= as_of),
        "model_versions": sum(1 for e in record.versions.values() if e.ref.block_number <= as_of),
        "events": bisect.bisect_right(record.event_blocks, as_of),
    }
    return [
        Difference("summary", "counts", name, getattr(counts, name), value, f"the index counts {name} differently from the chain")
        for name, value in chain.items()
        if getattr(counts, name) != value
    ]


def cursor_differences(record: ChainRecord, *, address: str, contract: str, block: int | None, block_hash: str | None, chain_block_hash: str | None) -> list[Difference]:
    """The index mirrors this ledger, and the block it reached is on the chain's branch."""
    found = []
    if contract.lower() != address.lower():
        found.append(Difference("cursor", "indexer_cursor", "contract_address", contract, address, "the index mirrors another ledger contract"))
    if block is not None and block > record.block_number:
        found.append(Difference("cursor", "indexer_cursor", "last_block", block, record.block_number, "the index claims blocks beyond the chain's head"))
    elif block is not None and block_hash != chain_block_hash:
        found.append(
            Difference(
                "cursor",
                "indexer_cursor",
                "last_block_hash",
                block_hash,
                chain_block_hash,
                f"block {block} of the index is not the chain's block {block}: the index follows a dropped branch",
            )
        )
    return found


_VERSION_FIELDS = ("version", "parent_hash", "round", "included_root", "included_count", "metadata_hash")
_REF_FIELDS = ("block_number", "tx_hash", "log_index")


_METADATA_FIELDS = ("rule_name", "rule_params", "metrics", "privacy", "policy")


class MetadataReader:
    """Metadata blobs as the index summarizes them (`parse_metadata`), read from a store and kept:
    a blob is named by its hash, so a summary never goes stale (only readable ones are kept)."""

    def __init__(self, store: BlobStore, *, capacity: int = 4096) -> None:
        self.store = store
        self.capacity = capacity
        self._summaries: dict[str, MetadataSummary] = {}

    def __call__(self, metadata_hash: str) -> MetadataSummary | None:
        found = self._summaries.get(metadata_hash)
        if found is None:
            try:
                found = parse_metadata(self.store.get(metadata_hash))  # the store re-hashes what it serves
            except (BlobStoreError, OSError):
                return None
            if found is None:
                return None
            if len(self._summaries) >= self.capacity:
                self._summaries.clear()
            self._summaries[metadata_hash] = found
        return found


def version_differences(
    record: ChainRecord, as_of: int, rows: Iterable[Any], metadata: Callable[[str], MetadataSummary | None] | None = None
) -> list[Difference]:
    """Each version row against its `ModelCommitted` (and its depth in the chain's lineage); with
    `metadata`, what the row took from its metadata blob (rule, metrics, ε, policy) against the blob
    the chain pins, when that blob can be read."""
    found = []
    for row in rows:
        event = record.versions.get(row.model_hash)
        if not _visible(event, as_of):
            found.append(Difference("version", row.model_hash, "model_hash", row.model_hash, None, f"no ModelCommitted of this hash up to block {as_of}"))
            continue
        assert event is not None
        chain = {name: getattr(event, name) for name in _VERSION_FIELDS}
        chain.update({name: getattr(event.ref, name) for name in _REF_FIELDS})
        chain["depth"] = record.depth[event.model_hash]
        for name, value in chain.items():
            if getattr(row, name) != value:
                found.append(Difference("version", row.model_hash, name, getattr(row, name), value, f"the version's {name} differs from its ModelCommitted event"))
        summary = metadata(event.metadata_hash) if metadata is not None and event.metadata_hash and row.metadata_loaded else None
        if summary is None:
            continue
        for name in _METADATA_FIELDS:
            pinned = getattr(summary, name)
            if getattr(row, name) != pinned:
                found.append(
                    Difference("version", row.model_hash, name, getattr(row, name), pinned, f"the version's {name} differs from its metadata blob {event.metadata_hash}")
                )
    return found


def inclusion_differences(
    record: ChainRecord, as_of: int, round_number: int, included: Sequence[Any], *, unknown: bool = False
) -> list[Difference]:
    """The round's rows marked included (node, update_hash, num_samples) against the chain.

    `unknown`: the index left inclusion undecided (NULL) for the round and marks nothing included,
    which is honest (it could not tell), not a disagreement.
    """
    key = f"round {round_number}"
    version = record.committed_round.get(round_number)
    if not _visible(version, as_of):
        return [
            Difference("inclusion", f"{key} / {row.node}", "included", True, None, f"round {round_number} has no committed version up to block {as_of}")
            for row in included
        ]
    assert version is not None
    if not included and unknown:
        return []
    found = []
    submitted = record.submissions.get(round_number, {})
    rejected = record.rejections.get(round_number, {})
    marked = {(row.node, row.update_hash) for row in included}
    for row in included:
        event, refusal = submitted.get(row.node), rejected.get(row.node)
        if event is None or event.update_hash != row.update_hash:
            found.append(Difference("inclusion", f"{key} / {row.node}", "included", True, None, f"{row.node} submitted no update {row.update_hash} in round {round_number}"))
        elif refusal is not None:
            reason = RejectReason(refusal.reason_code).name.lower() if refusal.reason_code in RejectReason._value2member_map_ else refusal.reason_code
            found.append(
                Difference("inclusion", f"{key} / {row.node}", "included", True, False, f"update {row.update_hash} is marked included, but the chain records its rejection ({reason}) in block {refusal.ref.block_number}")
            )
        elif row.num_samples != event.num_samples:
            found.append(Difference("inclusion", f"{key} / {row.node}", "num_samples", row.num_samples, event.num_samples, "the sample count differs from the node's UpdateSubmitted"))
    expected = record.expected_included(round_number)
    if expected is not None:
        for node, update_hash in sorted(expected - marked):
            found.append(
                Difference("inclusion", f"{key} / {node}", "included", False, True, f"update {update_hash} is under the round's includedRoot on chain, but the index does not mark it included")
            )
    elif not found:
        root = merkle_root(bytes.fromhex(h) for _, h in marked).hex() if marked else None
        if root != version.included_root or len(included) != version.included_count:
            found.append(
                Difference("inclusion", key, "included_root", {"root": root, "count": len(included)}, {"root": version.included_root, "count": version.included_count}, "the updates the index marks included do not give the committed Merkle root and count")
            )
    return found


def inclusion_page_agrees(
    record: ChainRecord,
    as_of: int,
    round_number: int,
    *,
    included: Sequence[Any],
    excluded: Sequence[Any],
    total: int | None,
    offset: int | None = None,
    descending: bool = False,
) -> bool:
    """Whether what an answer shows of a round's inclusions agrees with the chain, without reading
    the round's other rows: the rows it shows as `included` and as not (`excluded`), and the
    number of included updates it gives (`total`, None if it gives none). With `offset`, the
    included rows are a page of the round's included updates (by hash, then node; `descending`
    reversed) and must be the chain's own at that position: a page cannot show another row in
    place of one the chain included.

    True only when the chain itself tells the included set (`expected_included`: the unrejected
    submissions give the committed root and count), `total` is that set's size, each included row
    is in it with its submission's sample count, and no excluded row is. Anything else is not a
    verdict: the caller then compares the whole round (`inclusion_differences`), naming each difference.
    """
    if not _visible(record.committed_round.get(round_number), as_of):
        return False
    expected = record.expected_included(round_number)
    if expected is None or (total is not None and total != len(expected)):
        return False
    submitted = record.submissions.get(round_number, {})
    for row in included:
        event = submitted.get(row.node)
        if (row.node, row.update_hash) not in expected or event is None or row.num_samples != event.num_samples:
            return False
    if offset is not None:
        order = record.expected_order(round_number) or []
        if descending:
            order = order[::-1]
        if [(row.update_hash, row.node) for row in included] != order[offset : offset + len(included)]:
            return False
    return not any((row.node, row.update_hash) in expected for row in excluded)


def submission_differences(record: ChainRecord, as_of: int, rows: Iterable[Any]) -> list[Difference]:
    """Each submission row against its `UpdateSubmitted`, and its rejection against `UpdateRejected`."""
    found = []
    for row in rows:
        key = f"round {row.round} / {row.node}"
        event = record.submissions.get(row.round, {}).get(row.node)
        if not _visible(event, as_of):
            found.append(Difference("submission", key, "update_hash", row.update_hash, None, f"no UpdateSubmitted by {row.node} in round {row.round} up to block {as_of}"))
            continue
        assert event is not None
        for name, value in (("update_hash", event.update_hash), ("num_samples", event.num_samples), *((n, getattr(event.ref, n)) for n in _REF_FIELDS)):
            if getattr(row, name) != value:
                found.append(Difference("submission", key, name, getattr(row, name), value, f"the submission's {name} differs from its UpdateSubmitted event"))
        refusal = record.rejections.get(row.round, {}).get(row.node)
        code = refusal.reason_code if _visible(refusal, as_of) and refusal is not None else None
        if row.rejected_reason != code:
            found.append(Difference("submission", key, "rejected_reason", row.rejected_reason, code, "the rejection differs from the chain's UpdateRejected"))
    return found


def round_differences(record: ChainRecord, as_of: int, row: Any, tally: Any) -> list[Difference]:
    """A round row (base, deadline, state, blocks) and its tally against the round's events."""
    key = f"round {row.round}"
    opened = record.opened.get(row.round)
    if not _visible(opened, as_of):
        return [Difference("round", key, "round", row.round, None, f"no RoundOpened for round {row.round} up to block {as_of}")]
    assert opened is not None
    committed, abandoned = record.committed_round.get(row.round), record.abandoned.get(row.round)
    if _visible(committed, as_of):
        assert committed is not None
        state, closed, reason = "finalized", committed.ref.block_number, None
    elif _visible(abandoned, as_of):
        assert abandoned is not None
        state, closed, reason = "abandoned", abandoned.ref.block_number, abandoned.reason_code
    else:
        state, closed, reason = "open", None, None
    submitted = [e for e in record.submissions.get(row.round, {}).values() if e.ref.block_number <= as_of]
    rejected = [e for e in record.rejections.get(row.round, {}).values() if e.ref.block_number <= as_of]
    chain = {
        "base_model_hash": opened.base_model_hash,
        "deadline": opened.deadline,
        "min_updates": opened.min_updates,
        "opened_block": opened.ref.block_number,
        "opened_tx": opened.ref.tx_hash,
        "state": state,
        "closed_block": closed,
        "abandon_reason": reason,
        "submission_count": len(submitted),
        "rejected_count": len(rejected),
    }
    index = {name: getattr(row, name) for name in chain if hasattr(row, name)}
    index["state"] = row.state.value
    index["submission_count"], index["rejected_count"] = tally.submissions, tally.rejected
    return [
        Difference("round", key, name, index[name], value, f"the round's {name} differs from the chain's events")
        for name, value in chain.items()
        if index[name] != value
    ]


def node_differences(record: ChainRecord, as_of: int, row: Any, tally: Any) -> list[Difference]:
    """A node row (registration) and its tally (submitted, rejected, included) against the chain."""
    key = row.address
    history = [e for e in record.registrations.get(row.address, []) if e.ref.block_number <= as_of]
    registered = [e for e in history if isinstance(e, ev.NodeRegistered)]
    if not registered:
        return [Difference("node", key, "address", row.address, None, f"{row.address} was never registered up to block {as_of}")]
    last = history[-1]
    chain: dict[str, Any] = {
        "active": isinstance(last, ev.NodeRegistered),
        "registered_block": registered[-1].ref.block_number,
        "revoked_block": None if isinstance(last, ev.NodeRegistered) else last.ref.block_number,
    }
    submitted = [e for e in record.by_node.get(row.address, []) if e.ref.block_number <= as_of]
    rejected = [e for e in submitted if _visible(record.rejections.get(e.round, {}).get(e.node), as_of)]
    reasons: dict[int, int] = {}
    for event in rejected:
        code = record.rejections[event.round][event.node].reason_code
        reasons[code] = reasons.get(code, 0) + 1
    chain["submission_count"], chain["rejected_count"] = len(submitted), len(rejected)
    chain["last_round"] = max((e.round for e in submitted), default=None)
    chain["reasons"] = dict(sorted(reasons.items()))
    index = {"active": row.active, "registered_block": row.registered_block, "revoked_block": row.revoked_block}
    index["submission_count"], index["rejected_count"] = tally.submissions, tally.rejected
    index["last_round"], index["reasons"] = tally.last_round, tally.reasons
    decided = [record.expected_included(e.round) if _visible(record.committed_round.get(e.round), as_of) else frozenset() for e in submitted]
    if all(answer is not None for answer in decided):
        chain["included_count"] = sum(1 for e, answer in zip(submitted, decided) if answer and (e.node, e.update_hash) in answer)
        index["included_count"] = tally.included
    return [
        Difference("node", key, name, index[name], value, f"the node's {name} differs from the chain's events")
        for name, value in chain.items()
        if index[name] != value
    ]
