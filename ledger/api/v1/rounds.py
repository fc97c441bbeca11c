"""`/api/v1/rounds` and `/api/v1/rounds/<n>`: each round's base, deadline, state, submissions and result."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify
from flask.typing import ResponseReturnValue

from ledger.api.db import get_session
from ledger.api.v1 import checked
from ledger.api.v1.common import envelope, page_arg, round_arg, round_brief, submission
from ledger.index import queries
from ledger.index.queries import RoundTally

blueprint = Blueprint("api_rounds", __name__)


@blueprint.get("/rounds")
def list_rounds() -> ResponseReturnValue:
    session = get_session()
    page = page_arg()
    found = queries.rounds(session, page)
    numbers = [r.round for r in found.items]
    tallies = queries.round_tallies(session, numbers)
    committed = queries.versions_of_rounds(session, numbers)
    check = checked.chain_check(
        session,
        checked.all_of(
            checked.rounds([(r, tallies.get(r.round, RoundTally())) for r in found.items]),
            checked.versions(list(committed.values())),
            checked.shown_inclusions(session, {n: checked.Shown(total=tallies.get(n, RoundTally()).included) for n in numbers}),
        ),
    )
    body = envelope(found, page, lambda r: round_brief(r, tallies.get(r.round, RoundTally()), committed.get(r.round)))
    return jsonify({**body, **check})


@blueprint.get("/rounds/<number>")
def get_round(number: str) -> ResponseReturnValue:
    """The round with its submissions (paginated by `limit`/`offset`), each with its rejection and inclusion."""
    session = get_session()
    round_number = round_arg(number)
    page = page_arg()
    row = queries.round_by_number(session, round_number)
    if row is None:
        abort(404, description=f"round {round_number} has not been opened (or is not indexed yet)")
    tally = queries.round_tallies(session, [round_number]).get(round_number, RoundTally())
    committed = queries.versions_of_rounds(session, [round_number]).get(round_number)
    body = round_brief(row, tally, committed)
    found = queries.submissions(session, round_number, page)
    body["submissions"] = envelope(found, page, submission)
    body.update(
        checked.chain_check(
            session,
            checked.all_of(
                checked.rounds([(row, tally)]),
                checked.versions([committed] if committed is not None else []),
                checked.submissions(found.items),
                checked.shown_inclusions(session, {round_number: checked.Shown.of(found.items, tally.included)}),
            ),
        )
    )
    return jsonify(body)



