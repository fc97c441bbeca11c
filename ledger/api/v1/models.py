"""`/api/v1/models`, `/api/v1/models/<hash>`, its `/included` updates and its `/lineage`: the committed versions and their ancestry."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, url_for
from flask.typing import ResponseReturnValue

from ledger.api.db import get_session
from ledger.api.v1 import checked
from ledger.api.v1.common import DEFAULT_LIMIT, contributor, envelope, hash_arg, page_arg, version
from ledger.index import queries
from ledger.index.models import ModelVersion

STEP_UPDATES = 10  # included updates embedded per lineage step; the rest are a link away
_PLACEHOLDER = "0" * 64

blueprint = Blueprint("api_models", __name__)


@blueprint.get("/models")
def list_models() -> ResponseReturnValue:
    session = get_session()
    page = page_arg()
    found = queries.versions(session, page)
    check = checked.chain_check(session, checked.versions(found.items))
    return jsonify({**envelope(found, page, version), **check})


def _version_or_404(session: Any, text: str) -> ModelVersion:
    model_hash = hash_arg(text, "model hash")
    row = queries.version_by_hash(session, model_hash)
    if row is None:
        abort(404, description=f"{model_hash} is not a committed model version (or is not indexed yet)")
    return row


@blueprint.get("/models/<model_hash>")
def get_model(model_hash: str) -> ResponseReturnValue:
    """The version, the versions built on it, and its included updates (paginated)."""
    session = get_session()
    page = page_arg()
    row = _version_or_404(session, model_hash)
    body = version(row)
    body["children"] = queries.children(session, row.model_hash)
    body["inclusion_known"] = row.round == 0 or queries.included_hashes(session, row.round) != []
    included = queries.included_updates(session, row.round, page)
    body["included_updates"] = envelope(included, page, contributor)
    body.update(checked.chain_check(session, checked.all_of(checked.versions([row]), _shown(row, included, page))))
    return jsonify(body)


@blueprint.get("/models/<model_hash>/included")
def get_included(model_hash: str) -> ResponseReturnValue:
    """The version's included updates, by hash (paginated): the rest of a lineage step's first few."""
    session = get_session()
    page = page_arg()
    row = _version_or_404(session, model_hash)
    included = queries.included_updates(session, row.round, page)
    body = envelope(included, page, contributor)
    body.update(checked.chain_check(session, checked.all_of(checked.versions([row]), _shown(row, included, page))))
    return jsonify(body)


def _shown(row: ModelVersion, included: queries.Paged[Any], page: queries.Page) -> checked.Compare:
    """The version's included updates as a page shows them: its rows, at its position, and its total."""
    shown = checked.Shown(included.items, total=included.total, offset=page.offset, descending=page.descending)
    return checked.shown_inclusions(get_session(), {row.round: shown})


@blueprint.get("/models/<model_hash>/lineage")
def get_lineage(model_hash: str) -> ResponseReturnValue:
    """From this version back to genesis, newest first; each step embeds the first few of its
    included updates as a page whose `next` leads to `/models/<hash>/included` for the rest, so a
    page costs the same whether rounds include ten updates or ten thousand."""
    session = get_session()
    page = page_arg()
    tip = _version_or_404(session, model_hash)
    found = queries.lineage(session, tip, page)
    heads = queries.included_heads(session, [v.round for v in found.items if v.round > 0], STEP_UPDATES)
    # One url_for, then a substitution per step: building a URL costs ~0.2 ms, 50 of them a page's budget.
    rest_url = url_for("api_models.get_included", model_hash=_PLACEHOLDER, limit=DEFAULT_LIMIT, offset=STEP_UPDATES)
    # Each step against its ModelCommitted (so the parent links walked are the chain's), and what
    # each step shows of its included updates (the embedded head and the total) against the chain.
    shown = {
        v.round: checked.Shown(heads[v.round].rows, total=heads[v.round].total, offset=0) if v.round in heads else checked.Shown(total=0)
        for v in found.items
    }
    check = checked.chain_check(session, checked.all_of(checked.versions([tip, *found.items]), checked.shown_inclusions(session, shown)))

    def step(item: Any) -> dict[str, Any]:
        head = heads.get(item.round) if item.round > 0 else None
        total = head.total if head else 0
        rest = rest_url.replace(_PLACEHOLDER, item.model_hash) if total > STEP_UPDATES else None
        included = {
            "items": [contributor(u) for u in head.rows] if head else [],
            "total": total,
            "limit": STEP_UPDATES,
            "offset": 0,
            "next": rest,
        }
        return {**version(item), "included_updates": included}

    body = envelope(found, page, step)
    body["model_hash"] = tip.model_hash
    body.update(check)
    return jsonify(body)
