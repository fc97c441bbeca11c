"""What the chain says about rounds and nodes, read from events (never from the nodes' word).

Shared by the aggregator (which submissions to verify), the edge nodes (which round to train
for) and the demo's report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from ledger.chain import events
from ledger.chain.client import AttestationCounts, LedgerClient
from ledger.chain.clock import ChainClock
from ledger.chain.follow import LedgerFollower
from ledger.core.errors import LedgerError

log = logging.getLogger(__name__)


class NodeSet:
    """The registered, unrevoked nodes in registration order, kept up to date event by event."""

    def __init__(self) -> None:
        self._active: dict[str, None] = {}

    def apply(self, found: Iterable[events.LedgerEvent]) -> None:
        for event in found:
            if isinstance(event, events.NodeRegistered):
                self._active[event.node] = None
            elif isinstance(event, events.NodeRevoked):
                self._active.pop(event.node, None)

    def __len__(self) -> int:
        return len(self._active)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._active))

    def __contains__(self, node: object) -> bool:
        return node in self._active


def registered_nodes(client: LedgerClient, from_block: int = 0, to_block: int | str = "latest") -> NodeSet:
    """The node set as of `to_block`, from the registration and revocation events alone."""
    nodes = NodeSet()
    names = [events.NodeRegistered.event_name, events.NodeRevoked.event_name]
    nodes.apply(events.fetch_events(client.w3, client.address, from_block, to_block, event_names=names))
    return nodes


def active_nodes(client: LedgerClient, from_block: int = 0) -> list[str]:
    """Registered, unrevoked nodes, in registration order."""
    return list(registered_nodes(client, from_block))


def round_topic(round_number: int) -> str:
    return "0x" + round_number.to_bytes(32, "big").hex()


def round_opened_block(client: LedgerClient, round_number: int) -> int:
    """The block that opened the round: every submission and rejection of it lies at or after it."""
    opened = client.events(0, event_type=events.RoundOpened, topic_filters=[round_topic(round_number)])
    if not opened:
        raise LookupError(f"round {round_number} was never opened on this ledger")
    return int(opened[-1].ref.block_number)


def round_submissions(
    client: LedgerClient, round_number: int, from_block: int = 0, to_block: int | str = "latest"
) -> list[events.UpdateSubmitted]:
    """This round's `UpdateSubmitted` events, filtered on the indexed round topic."""
    return client.events(
        from_block, to_block, event_type=events.UpdateSubmitted, topic_filters=[round_topic(round_number)]
    )


def round_rejections(
    client: LedgerClient, round_number: int, from_block: int = 0, to_block: int | str = "latest"
) -> list[events.UpdateRejected]:
    return client.events(
        from_block, to_block, event_type=events.UpdateRejected, topic_filters=[round_topic(round_number)]
    )


def copies_of_earlier(submissions: Sequence[events.UpdateSubmitted]) -> dict[int, events.UpdateSubmitted]:
    """The submissions (by index) whose hash another node submitted earlier on chain, each with that
    earlier submission.

    The same bytes carry no new information, so they count once, for the first submitter in
    chain order (block, then log index); a copier gains nothing, and whoever copies first still
    only contributes what the original would have. The aggregator rejects the copies
    (`duplicate_update`); auditors re-check those rejections, and every inclusion, with this.
    """
    first: dict[str, events.UpdateSubmitted] = {}
    copies: dict[int, events.UpdateSubmitted] = {}
    in_chain_order = sorted(range(len(submissions)), key=lambda i: (submissions[i].ref.block_number, submissions[i].ref.log_index))
    for index in in_chain_order:
        submission = submissions[index]
        earlier = first.setdefault(submission.update_hash, submission)
        if earlier is not submission:
            copies[index] = earlier
    return copies


def committed_models(client: LedgerClient, from_block: int = 0) -> list[events.ModelCommitted]:
    """Every committed version, genesis first."""
    return client.events(from_block, event_type=events.ModelCommitted)


def latest_model_hash(client: LedgerClient) -> str:
    """The newest committed version's model hash; `LookupError` if nothing is committed yet."""
    versions = committed_models(client)
    if not versions:
        raise LookupError(f"ledger {client.address} on chain {client.chain_id} has no committed version yet: commit genesis first")
    return versions[-1].model_hash


@dataclass(frozen=True)
class LineageStep:
    version: int
    round: int
    model_hash: str
    parent_hash: str | None
    included_count: int
    metadata_hash: str | None


def lineage(client: LedgerClient, model_hash: str, from_block: int = 0) -> list[LineageStep]:
    """From `model_hash` back to genesis, following each version's parent as the chain recorded it."""
    by_hash = {event.model_hash: event for event in committed_models(client, from_block)}
    steps: list[LineageStep] = []
    current: str | None = model_hash
    while current is not None:
        event = by_hash.get(current)
        if event is None:
            raise LookupError(f"model {current} is not a committed version on this ledger")
        steps.append(
            LineageStep(
                version=event.version,
                round=event.round,
                model_hash=event.model_hash,
                parent_hash=event.parent_hash,
                included_count=event.included_count,
                metadata_hash=event.metadata_hash,
            )
        )
        current = event.parent_hash
    return steps


def chain_now(client: LedgerClient) -> int:
    """The latest block's timestamp: what `block.timestamp` deadlines are compared with."""
    return int(client.w3.eth.get_block("latest")["timestamp"])


class VersionRefused(LedgerError):
    """Auditors attested a version failed (unresolved): no round may build on it."""


class VerdictsMissing(LedgerError):
    """Too few auditors attested a version in time for a round to build on it."""


ATTESTATION_SECONDS = 120  # chain seconds auditors have, after a version's commit, to attest it (quorum > 0 only)
_ATTESTATION_EVENTS = (events.VersionAttested, events.AttestationResolved, events.AuditorSet)


def commit_of(client: LedgerClient, model_hash: str) -> events.ModelCommitted:
    """The `ModelCommitted` event of `model_hash` (filtered on its indexed topic); `LookupError` if none."""
    found = client.events(event_type=events.ModelCommitted, topic_filters=[None, "0x" + model_hash.removeprefix("0x")])
    if not found:
        raise LookupError(f"model {model_hash} is not a committed version on this ledger")
    return found[-1]


def wait_for_verdicts(
    client: LedgerClient,
    model_hash: str,
    *,
    follower: LedgerFollower,
    clock: ChainClock,
    seconds: int = ATTESTATION_SECONDS,
    seen: Callable[[list[events.LedgerEvent]], None] = lambda found: None,
) -> AttestationCounts:
    """Under an attestation quorum, wait until `model_hash` may be built on or an auditor failed it.

    Returns the counts at once when the deployment has no quorum. Woken by new blocks (`follower`;
    the events it hands out go to `seen`, so the caller's own state stays current), the counts are
    read again only when a block brings an attestation, a resolution or an auditor change. The
    deadline is chain time: `seconds` after the block that committed the version, so a restarted
    process waits for the same one. `VerdictsMissing` once a block past it exists without the quorum.
    """
    quorum = client.attestation_quorum()
    counts = client.attestation_counts(model_hash)
    if quorum == 0 or counts.opens_rounds(quorum) or counts.unresolved:
        return counts
    deadline = clock.timestamp_of(commit_of(client, model_hash).ref.block_number) + seconds
    log.info("waiting for %d auditor(s) to attest %s (until chain time %d)", quorum, model_hash, deadline)
    rewinds = follower.rewinds
    while True:
        if clock.timestamp_of(follower.cursor) > deadline:
            counts = client.attestation_counts(model_hash)
            if counts.opens_rounds(quorum) or counts.unresolved:
                return counts
            raise VerdictsMissing(
                f"version {model_hash} has {counts.current_ok} of the {quorum} ok attestations a round needs "
                f"{seconds} s of chain time after its commit: are {quorum} auditors running `fedledger audit watch`?"
            )
        upcoming = clock.next_timestamp()
        clock.advance_past(deadline, next_timestamp=upcoming)
        found = follower.wait(timeout=min(_WAKE_SECONDS, max(deadline - upcoming, clock.poll_seconds)))
        seen(found)
        if follower.rewinds != rewinds or any(isinstance(event, _ATTESTATION_EVENTS) for event in found):
            rewinds = follower.rewinds
            counts = client.attestation_counts(model_hash)
            if counts.opens_rounds(quorum) or counts.unresolved:
                return counts


_WAKE_SECONDS = 10.0  # at least this often a wait looks at chain time again (a devnet mines no idle blocks)


def buildable_versions(client: LedgerClient, from_block: int = 0) -> list[events.ModelCommitted]:
    """The versions a round may open on right now (every version without a quorum), genesis first."""
    quorum = client.attestation_quorum()
    versions = committed_models(client, from_block)
    if quorum == 0:
        return versions
    return [v for v in versions if client.attestation_counts(v.model_hash).opens_rounds(quorum)]
