"""What the chain says about rounds and nodes, read from events (never from the nodes' word).

Shared by the aggregator (which submissions to verify), the edge nodes (which round to train
for) and the demo's report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.chain import events
from ledger.chain.client import AttestationCounts, LedgerClient
from ledger.core.errors import LedgerError
from ledger.core.polling import POLL_SECONDS, WaitTimeout, poll_until


def active_nodes(client: LedgerClient, from_block: int = 0) -> list[str]:
    """Registered, unrevoked nodes, in registration order."""
    active: dict[str, None] = {}
    for event in client.events(from_block):
        if isinstance(event, events.NodeRegistered):
            active[event.node] = None
        elif isinstance(event, events.NodeRevoked):
            active.pop(event.node, None)
    return list(active)


def _round_topic(round_number: int) -> str:
    return "0x" + round_number.to_bytes(32, "big").hex()


def round_opened_block(client: LedgerClient, round_number: int) -> int:
    """The block that opened the round: every submission and rejection of it lies at or after it."""
    opened = client.events(0, event_type=events.RoundOpened, topic_filters=[_round_topic(round_number)])
    if not opened:
        raise LookupError(f"round {round_number} was never opened on this ledger")
    return int(opened[-1].ref.block_number)


def round_submissions(client: LedgerClient, round_number: int, from_block: int = 0) -> list[events.UpdateSubmitted]:
    """This round's `UpdateSubmitted` events, filtered on the indexed round topic."""
    return client.events(from_block, event_type=events.UpdateSubmitted, topic_filters=[_round_topic(round_number)])


def round_rejections(client: LedgerClient, round_number: int, from_block: int = 0) -> list[events.UpdateRejected]:
    return client.events(from_block, event_type=events.UpdateRejected, topic_filters=[_round_topic(round_number)])


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


def wait_for_verdicts(client: LedgerClient, model_hash: str, *, timeout: float) -> AttestationCounts:
    """Under an attestation quorum, wait until `model_hash` may be built on or an auditor failed it.

    Returns the counts at once when the deployment has no quorum; `VerdictsMissing` if neither
    happens within `timeout` seconds (too few auditors watching).
    """
    quorum = client.attestation_quorum()

    def decided() -> AttestationCounts | None:
        counts = client.attestation_counts(model_hash)
        return counts if counts.opens_rounds(quorum) or counts.unresolved else None

    try:
        return poll_until(decided, timeout=timeout, interval=POLL_SECONDS, what=f"{quorum} auditor(s) to attest {model_hash}")
    except WaitTimeout:
        counts = client.attestation_counts(model_hash)
        raise VerdictsMissing(
            f"version {model_hash} has {counts.current_ok} of the {quorum} ok attestations a round needs after "
            f"{timeout:.0f} s: are {quorum} auditors running `fedledger audit watch`?"
        ) from None


def buildable_versions(client: LedgerClient, from_block: int = 0) -> list[events.ModelCommitted]:
    """The versions a round may open on right now (every version without a quorum), genesis first."""
    quorum = client.attestation_quorum()
    versions = committed_models(client, from_block)
    if quorum == 0:
        return versions
    return [v for v in versions if client.attestation_counts(v.model_hash).opens_rounds(quorum)]
