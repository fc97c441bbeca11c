"""`/api/v1/privacy`: the update encoding and privacy policy genesis pins, and each node's ε per round.

Every row is checked against the chain and the metadata blob it came from (`checked`). The ε
values are the ones each round's metadata records (the accountant's verification of the
nodes' claims, re-checked by `verify`); a round lists every node whose claim was verified, the
included ones and those rejected for exceeding the budget.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from ledger.api.db import get_session
from ledger.api.v1 import checked
from ledger.api.v1.common import envelope, page_arg
from ledger.index import queries
from ledger.index.models import ModelVersion

blueprint = Blueprint("api_privacy", __name__)


def _round_epsilons(row: ModelVersion) -> dict[str, Any]:
    return {"round": row.round, "version": row.version, "model_hash": row.model_hash, "epsilon": row.privacy or {}}


@blueprint.get("/privacy")
def privacy() -> ResponseReturnValue:
    """The pinned encoding and DP policy (null before genesis is indexed), and ε per node, round by round."""
    session = get_session()
    page = page_arg()
    policy = queries.genesis_policy(session)
    found = queries.private_versions(session, page)
    genesis = queries.version_by_number(session, 0)
    body = {
        "encoding": None if policy is None else policy.get("encoding", "f32"),
        "policy": None if policy is None else policy.get("privacy"),
        "rounds": envelope(found, page, _round_epsilons),
    }
    # Each version row (and genesis, whose row holds the policy) against the chain and its metadata blob.
    body.update(checked.chain_check(session, checked.versions([*found.items, *([genesis] if genesis else [])])))
    return jsonify(body)
