"""Nothing from the index is served as truth unchecked: each answer is compared with the chain first.

`chain_check(session, compare)` compares the answer's rows with the chain's events as of the block
the index reached (`ledger.index.consistency`) and returns the fields every checked answer
carries: `"checked_against_chain": true` and the block. Rows that disagree abort with 409 and the
list of differences (run `fedledger index rebuild`). A service without a chain connection, or one
whose chain cannot be read right now, answers from the index with `"checked_against_chain": false`
and says why: never silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flask import abort, jsonify
from sqlalchemy.orm import Session

from ledger.api.services import services
from ledger.index import queries
from ledger.chain.mirror import ChainRecord
from ledger.index.consistency import (
    Difference,
    cursor_differences,
    inclusion_differences,
    inclusion_page_agrees,
    node_differences,
    round_differences,
    submission_differences,
    summary_differences,
    version_differences,
)

log = logging.getLogger(__name__)

Compare = Callable[[ChainRecord, int], list[Difference]]

# The chain's head is re-read at most this often (and whenever the index is ahead of it): a reorg
# reaches the answers within this delay, and a busy service does not ask the node on every request.
HEAD_MAX_AGE = 0.25


def chain_check(session: Session, compare: Compare) -> dict[str, Any]:
    """The check fields for an answer built from `session`'s rows; 409 if `compare` finds differences."""
    found = services()
    mirror = found.mirror
    if mirror is None:
        return _unchecked("this service has no chain connection, so the index's rows could not be compared with it")
    cursor = queries.cursor(session)
    as_of = cursor.last_block if cursor is not None and cursor.last_block is not None else -1
    with mirror.lock:
        try:
            record = mirror.record(max_age=HEAD_MAX_AGE, at_least=as_of)
            chain_hash = mirror.block_hash(as_of, record.block_hash or "") if 0 <= as_of <= record.block_number else None
        except Exception:  # the RPC can fail in many ways; none of them is a verdict on the index
            log.warning("cannot read the chain to check the index against it", exc_info=True)
            return _unchecked("the chain could not be read just now; retry for a checked answer")
        differences = []
        if cursor is not None:
            differences = cursor_differences(
                record,
                address=mirror.address,
                contract=cursor.contract_address,
                block=cursor.last_block,
                block_hash=cursor.last_block_hash,
                chain_block_hash=chain_hash,
            )
        if not differences:
            differences = compare(record, as_of)
    if differences:
        log.warning("the index disagrees with the chain in %d place(s): %s", len(differences), differences[0])
        response = jsonify(
            error="Conflict",
            detail=(
                f"the index disagrees with the chain in {len(differences)} place(s) as of block {as_of}; "
                "run `fedledger index rebuild` to repair it"
            ),
            checked_at_block=as_of,
            differences=[difference.to_json() for difference in differences],
        )
        response.status_code = 409
        abort(response)
    return {"checked_against_chain": True, "checked_at_block": as_of}


def _unchecked(reason: str) -> dict[str, Any]:
    return {"checked_against_chain": False, "unchecked_reason": reason}


def all_of(*compares: Compare) -> Compare:
    """One comparison running each of `compares` (an answer usually has rows of several kinds)."""

    def compare(record: ChainRecord, as_of: int) -> list[Difference]:
        return [difference for each in compares for difference in each(record, as_of)]

    return compare


def versions(rows: Sequence[Any]) -> Compare:
    """Version rows: against `ModelCommitted`, and what they took from their metadata blobs against those."""
    metadata = services().metadata
    return lambda record, as_of: version_differences(record, as_of, rows, metadata)


def submissions(rows: Sequence[Any]) -> Compare:
    return lambda record, as_of: submission_differences(record, as_of, rows)


def inclusions(session: Session, numbers: Iterable[int], included: Mapping[int, Sequence[Any]] | None = None) -> Compare:
    """The updates the index marks included in each of the rounds `numbers` (read now, compared later);
    `included`: those rows already read (`queries.included_by_round`)."""
    rounds = sorted({number for number in numbers if number > 0})
    if included is None:
        included = queries.included_by_round(session, rounds)
    # A round with no included row may have left inclusion undecided (NULL), which is not a difference.
    undecided = queries.undecided_rounds(session, [number for number in rounds if not included.get(number)])

    def compare(record: ChainRecord, as_of: int) -> list[Difference]:
        return [
            difference
            for number in rounds
            for difference in inclusion_differences(record, as_of, number, included.get(number, []), unknown=number in undecided)
        ]

    return compare


@dataclass(frozen=True)
class Shown:
    """What an answer shows of one round's inclusions: rows it shows as included, rows it shows as
    not included, and the number of included updates it gives (None if it gives none)."""

    included: Sequence[Any] = ()
    excluded: Sequence[Any] = ()
    total: int | None = None
    # Set when `included` is a page of the round's included updates (by hash, then node): they
    # must then be the chain's own at that position.
    offset: int | None = None
    descending: bool = False

    @classmethod
    def of(cls, rows: Sequence[Any], total: int | None = None) -> Shown:
        """Submission rows shown with their inclusion flags (`included` True, or not)."""
        return cls([r for r in rows if r.included is True], [r for r in rows if r.included is not True], total)


def shown_inclusions(session: Session, shown: Mapping[int, Shown]) -> Compare:
    """What an answer shows of each round's inclusions, checked at the cost of what it shows, not of
    the round's size: a round is settled by `inclusion_page_agrees` when the chain tells its included
    set, and only otherwise (or when what is shown disagrees) are all its included rows read and
    compared, naming each difference. Rows an answer does not show are checked by the answers that
    show them (`/models/<hash>/included`, `/rounds/<n>`)."""

    def compare(record: ChainRecord, as_of: int) -> list[Difference]:
        doubtful = [
            number
            for number, page in sorted(shown.items())
            if number > 0
            and not inclusion_page_agrees(
                record, as_of, number, included=page.included, excluded=page.excluded, total=page.total,
                offset=page.offset, descending=page.descending,
            )  # fmt: skip
        ]
        return inclusions(session, doubtful)(record, as_of) if doubtful else []

    return compare


def shown_rows(rows: Iterable[Any]) -> dict[int, Shown]:
    """Submission rows an answer shows with their inclusion flags, by round (no totals)."""
    by_round: dict[int, list[Any]] = {}
    for row in rows:
        by_round.setdefault(row.round, []).append(row)
    return {number: Shown.of(found) for number, found in by_round.items()}


def rounds(rows: Sequence[tuple[Any, Any]]) -> Compare:
    """(round row, its tally) pairs."""
    return lambda record, as_of: [d for row, tally in rows for d in round_differences(record, as_of, row, tally)]


def nodes(rows: Sequence[tuple[Any, Any]]) -> Compare:
    """(node row, its tally) pairs."""
    return lambda record, as_of: [d for row, tally in rows for d in node_differences(record, as_of, row, tally)]


def counts(index_counts: Any) -> Compare:
    return lambda record, as_of: summary_differences(record, as_of, index_counts)
