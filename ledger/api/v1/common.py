"""What every `/api/v1` endpoint shares: argument parsing (400 on malformed input), pagination, JSON shapes.

Hashes are accepted with or without `0x`, in either case, and always answered as bare lowercase
hex (what `sha256sum` prints); addresses are accepted in any case and answered EIP-55 checksummed.
A list answers `{"items": [...], "total", "limit", "offset", "next"}`, where `next` is the URL of
the following page or null; a detail embeds the first page of its sub-list the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flask import Response, abort, jsonify, request, url_for
from sqlalchemy import Row
from web3 import Web3
from werkzeug.http import HTTP_STATUS_CODES

from ledger.core.hashing import normalize_hash
from ledger.index.models import ModelVersion, Node, Round, Submission
from ledger.index.queries import NodeTally, Page, Paged, RoundTally
from ledger.core.reasons import AbandonReason, RejectReason

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

T = TypeVar("T")


# --------------------------------------------------------------------------- arguments


def problem(status: int, detail: str, **fields: Any) -> Response:
    """A JSON error answer (`error`, `detail`, extra fields) for routes that answer errors themselves."""
    response = jsonify(error=HTTP_STATUS_CODES.get(status, "Error"), detail=detail, **fields)
    response.status_code = status
    return response


def hash_arg(text: str, what: str = "hash") -> str:
    try:
        return normalize_hash(text)
    except (ValueError, TypeError):
        abort(400, description=f"a {what} is a SHA-256 digest: 64 hex characters, optionally 0x-prefixed; got {text!r}")


def address_arg(text: str) -> str:
    """An address in any single case, or EIP-55 mixed case with a valid checksum (a typo check)."""
    body = text[2:] if text.startswith("0x") else ""
    mixed = body != body.lower() and body != body.upper()
    if not Web3.is_address(text) or (mixed and not Web3.is_checksum_address(text)):
        abort(400, description=f"not an address (0x and 40 hex characters, valid EIP-55 checksum if mixed case): {text!r}")
    return Web3.to_checksum_address(text)


# The index stores round numbers as signed 64-bit integers (SQL BIGINT): larger ones cannot exist.
MAX_ROUND = 2**63 - 1


def _decimal(text: str) -> bool:
    """ASCII digits only: `str.isdigit` also accepts '²' or '٣', which `int` then refuses or misreads."""
    return text.isascii() and text.isdigit()


def round_arg(text: str) -> int:
    if not _decimal(text) or len(text) > 20:
        abort(400, description=f"a round number is a non-negative integer, got {text!r}")
    number = int(text)
    if number > MAX_ROUND:
        abort(400, description=f"round numbers are below 2**63, got {text}")
    return number


def page_arg() -> Page:
    """`?limit=&offset=&order=asc|desc` from the query string."""
    limit = _int_query("limit", DEFAULT_LIMIT)
    offset = _int_query("offset", 0)
    if not 1 <= limit <= MAX_LIMIT:
        abort(400, description=f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    order = request.args.get("order", "asc")
    if order not in ("asc", "desc"):
        abort(400, description=f"order must be 'asc' or 'desc', got {order!r}")
    return Page(limit=limit, offset=offset, descending=order == "desc")


def _int_query(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not _decimal(raw) or len(raw) > 12:
        abort(400, description=f"{name} must be a non-negative integer, got {raw!r}")
    return int(raw)


# --------------------------------------------------------------------------- pagination


def next_url(page: Page, total: int) -> str | None:
    """The URL of the page after `page` (same endpoint and query), or None on the last page."""
    if page.offset + page.limit >= total:
        return None
    assert request.endpoint is not None
    query: dict[str, Any] = {**request.args.to_dict(), "limit": page.limit, "offset": page.offset + page.limit}
    return url_for(request.endpoint, **(request.view_args or {}), **query)


def envelope(paged: Paged[T], page: Page, shape: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    return {
        "items": [shape(item) for item in paged.items],
        "total": paged.total,
        "limit": page.limit,
        "offset": page.offset,
        "next": next_url(page, paged.total),
    }


# --------------------------------------------------------------------------- shapes


def reject_reason(code: int | None) -> dict[str, Any] | None:
    if code is None:
        return None
    try:
        reason = RejectReason(code)
    except ValueError:
        return {"code": code, "name": None, "description": f"reason code {code} is not one this fedledger knows"}
    return {"code": code, "name": reason.name.lower(), "description": reason.description}


def abandon_reason(code: int | None) -> dict[str, Any] | None:
    if code is None:
        return None
    try:
        reason = AbandonReason(code)
    except ValueError:
        return {"code": code, "name": None, "description": f"reason code {code} is not one this fedledger knows"}
    return {"code": code, "name": reason.name.lower(), "description": reason.description}


def submission(update: Submission) -> dict[str, Any]:
    return {
        "round": update.round,
        "node": update.node,
        "update_hash": update.update_hash,
        "num_samples": update.num_samples,
        "rejection": reject_reason(update.rejected_reason),
        "included": update.included,
        "block_number": update.block_number,
        "tx_hash": update.tx_hash,
        "log_index": update.log_index,
    }


def contributor(update: Submission | Row[Any]) -> dict[str, Any]:
    return {"update_hash": update.update_hash, "node": update.node, "num_samples": update.num_samples}


def version(row: ModelVersion | Row[Any]) -> dict[str, Any]:
    return {
        "version": row.version,
        "model_hash": row.model_hash,
        "parent_hash": row.parent_hash,
        "round": row.round,
        "depth": row.depth,
        "included_root": row.included_root,
        "included_count": row.included_count,
        "metadata_hash": row.metadata_hash,
        "metadata_loaded": row.metadata_loaded,
        "rule": None if row.rule_name is None else {"name": row.rule_name, "params": row.rule_params or {}},
        "metrics": row.metrics,
        "privacy": row.privacy,
        "block_number": row.block_number,
        "tx_hash": row.tx_hash,
        "log_index": row.log_index,
    }


def round_brief(row: Round, tally: RoundTally, committed: ModelVersion | None) -> dict[str, Any]:
    return {
        "round": row.round,
        "state": row.state.value,
        "base_model_hash": row.base_model_hash,
        "deadline": row.deadline,
        "min_updates": row.min_updates,
        "opened_block": row.opened_block,
        "opened_tx": row.opened_tx,
        "closed_block": row.closed_block,
        "abandon_reason": abandon_reason(row.abandon_reason),
        "submission_count": tally.submissions,
        "rejected_count": tally.rejected,
        "included_count": tally.included,
        "model_hash": committed.model_hash if committed else None,
        "version": committed.version if committed else None,
    }


def node_brief(row: Node, tally: NodeTally) -> dict[str, Any]:
    return {
        "address": row.address,
        "active": row.active,
        "registered_block": row.registered_block,
        "revoked_block": row.revoked_block,
        "submission_count": tally.submissions,
        "included_count": tally.included,
        "rejected_count": tally.rejected,
        "last_round": tally.last_round,
        "rejections": [{**(reject_reason(code) or {}), "count": count} for code, count in tally.reasons.items()],
    }


def hex_list(items: Sequence[bytes]) -> list[str]:
    return [item.hex() for item in items]
