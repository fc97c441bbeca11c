"""`/api/v1/summary`: which ledger the index mirrors, how far it got, and how much it holds."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from ledger.api.services import services
from ledger.api.db import get_session
from ledger.api.v1 import checked
from ledger.api.v1.attestations import attestation_summary
from ledger.api.v1.common import version
from ledger.index import queries
from ledger.index.db import head_revision
from ledger.index.models import RoundStatus

log = logging.getLogger(__name__)

blueprint = Blueprint("api_summary", __name__)


@blueprint.get("/summary")
def summary() -> ResponseReturnValue:
    session = get_session()
    cursor = queries.cursor(session)
    counts = queries.counts(session)
    latest = queries.latest_version(session)
    head = _head_block()
    indexed = cursor.last_block if cursor else None
    body: dict[str, Any] = {
        "contract": cursor.contract_address if cursor else _ledger_address(),
        "chain_id": cursor.chain_id if cursor else None,
        "start_block": cursor.start_block if cursor else None,
        "indexed_block": indexed,
        "indexed_block_hash": cursor.last_block_hash if cursor else None,
        "head_block": head,
        "lag_blocks": head - indexed if head is not None and indexed is not None else None,
        "schema_revision": head_revision(),
        "nodes": {"total": counts.nodes, "active": counts.active_nodes},
        "rounds": {"total": counts.rounds, **{s.value: counts.rounds_by_state.get(s.value, 0) for s in RoundStatus}},
        "updates": {"total": counts.updates, "rejected": counts.rejected_updates},
        "versions": {"total": counts.model_versions},
        "events": {"total": counts.events},
        "latest_version": version(latest) if latest else None,
    }
    body.update(
        checked.chain_check(
            session, checked.all_of(checked.counts(counts), checked.versions([latest] if latest is not None else []))
        )
    )
    body["attestations"] = _attestations()
    return jsonify(body)


def _attestations() -> dict[str, Any] | None:
    """The quorum and the auditors' verdicts so far, from the chain (None without a chain connection)."""
    mirror = services().mirror
    if mirror is None:
        return None
    try:
        with mirror.lock:
            return attestation_summary(mirror.record())
    except Exception:  # an unreachable chain must not break the summary of what is indexed
        log.warning("cannot read the chain's attestations", exc_info=True)
        return None


def _head_block() -> int | None:
    """The chain's head when the service has a ledger client; None if it has none or the RPC fails."""
    ledger = services().ledger
    if ledger is None:
        return None
    try:
        return int(ledger.w3.eth.block_number)
    except Exception:  # an unreachable chain must not break the summary of what is indexed
        log.warning("cannot read the chain head", exc_info=True)
        return None


def _ledger_address() -> str | None:
    ledger = services().ledger
    return ledger.address if ledger is not None else None
