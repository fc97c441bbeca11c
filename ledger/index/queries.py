"""The index's read side: the questions the audit API asks, as SQL over the index tables.

Every list takes a `Page` and returns its rows with the total, so callers can paginate. Lineage
walks parent links with one recursive CTE (one round trip, whatever the depth).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Generic, TypeVar

from sqlalchemy import BigInteger, Row, Select, bindparam, case, column, func, literal, select, text, union_all
from sqlalchemy.orm import Session

from ledger.index.models import ChainEvent, IndexerCursor, ModelVersion, Node, Round, Submission

T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int = 0
    descending: bool = False


@dataclass(frozen=True)
class Paged(Generic[T]):
    items: list[T]
    total: int


@dataclass(frozen=True)
class Counts:
    nodes: int
    active_nodes: int
    rounds: int
    rounds_by_state: dict[str, int]
    updates: int
    rejected_updates: int
    model_versions: int
    events: int


@dataclass(frozen=True)
class RoundTally:
    submissions: int = 0
    rejected: int = 0
    included: int = 0


@dataclass(frozen=True)
class NodeTally:
    submissions: int = 0
    rejected: int = 0
    included: int = 0
    last_round: int | None = None  # the latest round the node submitted in
    reasons: dict[int, int] = field(default_factory=dict)  # rejection reason code → how many


def cursor(session: Session) -> IndexerCursor | None:
    return session.scalars(select(IndexerCursor).limit(1)).first()


def counts(session: Session) -> Counts:
    def count(statement: Select[Any]) -> int:
        return int(session.scalar(statement) or 0)

    return Counts(
        nodes=count(select(func.count()).select_from(Node)),
        active_nodes=count(select(func.count()).select_from(Node).where(Node.active.is_(True))),
        rounds=count(select(func.count()).select_from(Round)),
        rounds_by_state={
            state.value: n for state, n in session.execute(select(Round.state, func.count()).group_by(Round.state))
        },
        updates=count(select(func.count()).select_from(Submission)),
        rejected_updates=count(select(func.count()).select_from(Submission).where(Submission.rejected_reason.is_not(None))),
        model_versions=count(select(func.count()).select_from(ModelVersion)),
        events=count(select(func.count()).select_from(ChainEvent)),
    )


def latest_version(session: Session) -> ModelVersion | None:
    return session.scalars(select(ModelVersion).order_by(ModelVersion.version.desc()).limit(1)).first()


def genesis_policy(session: Session) -> dict[str, Any] | None:
    """The federation policy genesis pins (None until genesis and its metadata are indexed)."""
    return session.scalars(select(ModelVersion.policy).where(ModelVersion.parent_hash.is_(None)).limit(1)).first()


def private_versions(session: Session, page: Page) -> Paged[ModelVersion]:
    """Versions whose metadata records ε per node (private federations), by version."""
    base = select(ModelVersion).where(ModelVersion.privacy.is_not(None))
    return Paged(list(session.scalars(_page(base, page, ModelVersion.version))), _total(session, base))


def _page(statement: Select[Any], page: Page, *order: Any) -> Select[Any]:
    ordered = [column.desc() if page.descending else column for column in order]
    return statement.order_by(*ordered).limit(page.limit).offset(page.offset)


def _total(session: Session, statement: Select[Any]) -> int:
    return int(session.scalar(select(func.count()).select_from(statement.subquery())) or 0)


# --------------------------------------------------------------------------- rounds


def rounds(session: Session, page: Page) -> Paged[Round]:
    base = select(Round)
    return Paged(list(session.scalars(_page(base, page, Round.round))), _total(session, base))


def round_by_number(session: Session, number: int) -> Round | None:
    return session.get(Round, number)


def round_tallies(session: Session, numbers: Sequence[int]) -> dict[int, RoundTally]:
    rows = session.execute(
        select(
            Submission.round,
            func.count(),
            func.count(Submission.rejected_reason),
            func.sum(case((Submission.included.is_(True), 1), else_=0)),
        )
        .where(Submission.round.in_(numbers))
        .group_by(Submission.round)
    )
    return {r: RoundTally(int(n), int(rej), int(inc or 0)) for r, n, rej, inc in rows}


def versions_of_rounds(session: Session, numbers: Sequence[int]) -> dict[int, ModelVersion]:
    found = session.scalars(select(ModelVersion).where(ModelVersion.round.in_(numbers), ModelVersion.round > 0))
    return {version.round: version for version in found}


def submissions(session: Session, round_number: int, page: Page) -> Paged[Submission]:
    base = select(Submission).where(Submission.round == round_number)
    return Paged(
        list(session.scalars(_page(base, page, Submission.block_number, Submission.log_index))), _total(session, base)
    )


# --------------------------------------------------------------------------- versions


def versions(session: Session, page: Page) -> Paged[ModelVersion]:
    base = select(ModelVersion)
    return Paged(list(session.scalars(_page(base, page, ModelVersion.version))), _total(session, base))


def version_by_number(session: Session, number: int) -> ModelVersion | None:
    return session.get(ModelVersion, number)


def version_by_hash(session: Session, model_hash: str) -> ModelVersion | None:
    return session.scalars(select(ModelVersion).where(ModelVersion.model_hash == model_hash)).first()


def children(session: Session, model_hash: str) -> list[str]:
    return list(
        session.scalars(
            select(ModelVersion.model_hash).where(ModelVersion.parent_hash == model_hash).order_by(ModelVersion.version)
        )
    )


def included_updates(session: Session, round_number: int, page: Page) -> Paged[Submission]:
    base = select(Submission).where(Submission.round == round_number, Submission.included.is_(True))
    return Paged(list(session.scalars(_page(base, page, Submission.update_hash, Submission.node))), _total(session, base))


@dataclass(frozen=True)
class IncludedHead:
    """The first `limit` included updates of a round (by hash, then node) and how many there are."""

    rows: list[Row[Any]]
    total: int


def included_heads(session: Session, numbers: Sequence[int], limit: int) -> dict[int, IncludedHead]:
    """The first `limit` included updates of each of several rounds, with each round's total.

    Straight from the (round, included, update_hash, node) index: the totals as an index-only
    count, the heads as per-round `LIMIT` reads. On PostgreSQL both in one LATERAL statement (one
    round trip; its planner takes ~10 ms over a 50-arm UNION ALL); elsewhere, e.g. SQLite, which
    has no LATERAL, a count and a UNION ALL of the per-round reads.
    """
    heads: dict[int, IncludedHead] = {}
    if not numbers:
        return heads
    if session.get_bind().dialect.name == "postgresql":
        for row in session.execute(_LATERAL_HEADS, {"rounds": sorted(set(numbers)), "per_round": limit}).all():
            heads.setdefault(row.round, IncludedHead([], int(row.total))).rows.append(row)
        return heads
    table = Submission.__table__
    totals = session.execute(
        select(table.c.round, func.count())
        .where(table.c.round.in_(numbers), table.c.included == True)  # noqa: E712 (= true: the index's form)
        .group_by(table.c.round)
    )
    for number, total in totals:
        heads[number] = IncludedHead([], int(total))
    if heads:
        wanted = sorted(heads)
        parameters = {f"round_{i}": n for i, n in enumerate(wanted)}
        for row in session.execute(_heads_statement(len(wanted)), {**parameters, "per_round": limit}).all():
            heads[row.round].rows.append(row)
    return heads


# Each wanted round's first rows, each with the round's included count (a round with none has no
# row: it is left out, as the count query elsewhere leaves it out).
_LATERAL_HEADS = text(
    "SELECT wanted.round, counted.total, head.update_hash, head.node, head.num_samples "
    "FROM unnest(CAST(:rounds AS BIGINT[])) AS wanted(round) "
    "CROSS JOIN LATERAL (SELECT count(*) AS total FROM updates "
    "WHERE updates.round = wanted.round AND included = true) AS counted "
    "CROSS JOIN LATERAL (SELECT update_hash, node, num_samples FROM updates "
    "WHERE updates.round = wanted.round AND included = true ORDER BY update_hash, node LIMIT :per_round) AS head "
    "ORDER BY wanted.round, head.update_hash, head.node"
).columns(
    Submission.__table__.c.round,
    column("total", BigInteger),
    Submission.__table__.c.update_hash,
    Submission.__table__.c.node,
    Submission.__table__.c.num_samples,
)


@lru_cache(maxsize=64)
def _heads_statement(rounds: int) -> Any:
    """`rounds` arms of `... WHERE round = :round_i AND included ORDER BY update_hash, node LIMIT :per_round`."""
    table = Submission.__table__
    arms = [
        select(table.c.round, table.c.update_hash, table.c.node, table.c.num_samples)
        .where(table.c.round == bindparam(f"round_{i}"), table.c.included == True)  # noqa: E712
        .order_by(table.c.update_hash, table.c.node)
        .limit(bindparam("per_round", literal_execute=False))
        .subquery()
        for i in range(rounds)
    ]
    return union_all(*(select(arm) for arm in arms))


def undecided_rounds(session: Session, numbers: Sequence[int]) -> set[int]:
    """Rounds among `numbers` with a submission whose inclusion the index left undecided (NULL)."""
    if not numbers:
        return set()
    return set(
        session.scalars(
            select(Submission.round).where(Submission.round.in_(numbers), Submission.included.is_(None)).distinct()
        )
    )


def included_by_round(session: Session, numbers: Sequence[int]) -> dict[int, list[Row[Any]]]:
    """Included updates of several rounds at once (one query, plain rows), by hash within a round."""
    grouped: dict[int, list[Row[Any]]] = defaultdict(list)
    if numbers:
        table = Submission.__table__
        for row in session.execute(
            select(table)
            .where(table.c.round.in_(numbers), table.c.included.is_(True))
            .order_by(table.c.round, table.c.update_hash, table.c.node)
        ).all():
            grouped[row.round].append(row)
    return grouped


def lineage(session: Session, tip: ModelVersion, page: Page) -> Paged[Row[Any]]:
    """`tip` and its ancestors, newest first, back to genesis: one page of them, as plain rows.

    One recursive CTE follows `parent_hash` through the unique index on `model_hash`, and stops
    after `offset + limit` steps: a page costs what it shows, not the lineage's length, which is
    known without walking (`depth` + 1). Every parent is in the index (a foreign key), so every
    walk reaches genesis. Plain rows, not ORM objects: the API turns thousands of them into JSON.
    """
    total = tip.depth + 1
    if page.descending:  # oldest first: the same walk, counted from the other end
        offset = max(total - page.offset - page.limit, 0)
        limit = max(min(page.limit, total - page.offset), 0)
    else:
        offset, limit = page.offset, page.limit
    if limit <= 0 or offset >= total:
        return Paged([], total)
    statement = _lineage_statement(page.descending)
    rows = session.execute(statement, {"tip_version": tip.version, "steps": offset + limit, "skip": offset}).all()
    return Paged(list(rows), total)


@lru_cache(maxsize=2)
def _lineage_statement(descending: bool) -> Select[Any]:
    """Built once (bound parameters): constructing a CTE costs more Python time than running it."""
    table = ModelVersion.__table__
    start = (
        select(table.c.version, table.c.parent_hash, literal(0).label("step"))
        .where(table.c.version == bindparam("tip_version"))
        .cte("lineage", recursive=True)
    )
    parent = table.alias("parent")
    walk = start.union_all(
        select(parent.c.version, parent.c.parent_hash, (start.c.step + 1).label("step")).where(
            parent.c.model_hash == start.c.parent_hash,
            parent.c.version < start.c.version,  # parents are older: bounds the walk whatever the data
            start.c.step + 1 < bindparam("steps"),
        )
    )
    return (
        select(table)
        .join(walk, walk.c.version == table.c.version)
        .where(walk.c.step >= bindparam("skip"))
        .order_by(walk.c.step.desc() if descending else walk.c.step)
    )


# --------------------------------------------------------------------------- updates


def submissions_of_hash(session: Session, update_hash: str, page: Page) -> Paged[Submission]:
    base = select(Submission).where(Submission.update_hash == update_hash)
    return Paged(list(session.scalars(_page(base, page, Submission.round, Submission.node))), _total(session, base))


def included_hashes(session: Session, round_number: int) -> list[str]:
    return sorted(
        set(
            session.scalars(
                select(Submission.update_hash).where(Submission.round == round_number, Submission.included.is_(True))
            )
        )
    )


# --------------------------------------------------------------------------- nodes


def nodes(session: Session, page: Page) -> Paged[Node]:
    base = select(Node)
    return Paged(
        list(session.scalars(_page(base, page, Node.registered_block, Node.address))), _total(session, base)
    )


def node_by_address(session: Session, address: str) -> Node | None:
    return session.get(Node, address)


def node_tallies(session: Session, addresses: Sequence[str]) -> dict[str, NodeTally]:
    rows = session.execute(
        select(
            Submission.node,
            func.count(),
            func.count(Submission.rejected_reason),
            func.sum(case((Submission.included.is_(True), 1), else_=0)),
            func.max(Submission.round),
        )
        .where(Submission.node.in_(addresses))
        .group_by(Submission.node)
    ).all()
    reasons: dict[str, dict[int, int]] = defaultdict(dict)
    for node, code, n in session.execute(
        select(Submission.node, Submission.rejected_reason, func.count())
        .where(Submission.node.in_(addresses), Submission.rejected_reason.is_not(None))
        .group_by(Submission.node, Submission.rejected_reason)
    ):
        if code is not None:
            reasons[node][int(code)] = int(n)
    return {
        node: NodeTally(int(n), int(rej), int(inc or 0), int(last), dict(sorted(reasons[node].items())))
        for node, n, rej, inc, last in rows
    }


def contributions(session: Session, address: str, page: Page) -> Paged[Submission]:
    base = select(Submission).where(Submission.node == address)
    return Paged(list(session.scalars(_page(base, page, Submission.round))), _total(session, base))
