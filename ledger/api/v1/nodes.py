"""`/api/v1/nodes` and `/api/v1/nodes/<address>`: who may submit, and what each node contributed."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify
from flask.typing import ResponseReturnValue

from ledger.api.db import get_session
from ledger.api.v1 import checked
from ledger.api.v1.common import address_arg, envelope, node_brief, page_arg, submission
from ledger.index import queries
from ledger.index.models import Submission
from ledger.index.queries import NodeTally

blueprint = Blueprint("api_nodes", __name__)


@blueprint.get("/nodes")
def list_nodes() -> ResponseReturnValue:
    session = get_session()
    page = page_arg()
    found = queries.nodes(session, page)
    tallies = queries.node_tallies(session, [n.address for n in found.items])
    check = checked.chain_check(session, checked.nodes([(n, tallies.get(n.address, NodeTally())) for n in found.items]))
    return jsonify({**envelope(found, page, lambda n: node_brief(n, tallies.get(n.address, NodeTally()))), **check})


@blueprint.get("/nodes/<address>")
def get_node(address: str) -> ResponseReturnValue:
    """The node and its contribution history (every submission, paginated), with the version each went into."""
    session = get_session()
    node_address = address_arg(address)
    page = page_arg()
    row = queries.node_by_address(session, node_address)
    if row is None:
        abort(404, description=f"{node_address} has never been registered as a node (or is not indexed yet)")
    tally = queries.node_tallies(session, [node_address]).get(node_address, NodeTally())
    found = queries.contributions(session, node_address, page)
    built = queries.versions_of_rounds(session, [u.round for u in found.items])

    def contribution(update: Submission) -> dict[str, Any]:
        into = built.get(update.round) if update.included else None
        return {**submission(update), "model_hash": into.model_hash if into else None, "version": into.version if into else None}

    body = node_brief(row, tally)
    body["contributions"] = envelope(found, page, contribution)
    body.update(
        checked.chain_check(
            session,
            checked.all_of(
                checked.nodes([(row, tally)]),
                checked.submissions(found.items),
                checked.versions(list(built.values())),
                checked.shown_inclusions(session, checked.shown_rows(found.items)),
            ),
        )
    )
    return jsonify(body)
