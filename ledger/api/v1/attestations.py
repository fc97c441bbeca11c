"""`/api/v1/attestations` and `/api/v1/models/<hash>/attestations`: auditors' verdicts, read from the chain.

These answers do not come from the index: they are the chain's `VersionAttested` and
`AttestationResolved` events (kept per head block by the service's `ChainMirror`), each with the
auditor's report when the blob store holds it (re-hashed by the store; its hash is the one on
chain), so a failing verdict is shown with its findings.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, jsonify
from flask.typing import ResponseReturnValue

from ledger.api.services import services
from ledger.api.v1.common import hash_arg, next_url, page_arg
from ledger.chain import events as ev
from ledger.core.safe_json import UntrustedJsonError, parse_untrusted_json
from ledger.chain.mirror import ChainRecord
from ledger.store.base import BlobStoreError

log = logging.getLogger(__name__)

blueprint = Blueprint("api_attestations", __name__)


@blueprint.get("/attestations")
def list_attestations() -> ResponseReturnValue:
    """Every attestation in chain order (paginated)."""
    record = _chain_record()
    page = page_arg()
    found = list(reversed(record.attestations)) if page.descending else record.attestations
    items = found[page.offset : page.offset + page.limit]
    return jsonify(
        {
            "items": [_attestation(record, a) for a in items],
            "total": len(found),
            "limit": page.limit,
            "offset": page.offset,
            "next": next_url(page, len(found)),
            "from_chain": True,
            "block": record.block_number,
        }
    )


@blueprint.get("/models/<model_hash>/attestations")
def model_attestations(model_hash: str) -> ResponseReturnValue:
    """One version's attestations, with the quorum and whether a round may build on it now."""
    wanted = hash_arg(model_hash, "model hash")
    record = _chain_record()
    version = record.versions.get(wanted)
    if version is None:
        abort(404, description=f"{wanted} is not a committed model version on this ledger")
    mine = [a for a in record.attestations if a.model_hash == wanted]
    quorum = _quorum()
    ok = sum(1 for a in mine if a.ok)
    unresolved = sum(1 for a in mine if not a.ok and (a.model_hash, a.auditor) not in record.resolutions)
    return jsonify(
        {
            "model_hash": wanted,
            "version": version.version,
            "attestation_quorum": quorum,
            "ok_count": ok,
            "failed_count": sum(1 for a in mine if not a.ok),
            "unresolved_count": unresolved,
            "attestations": [_attestation(record, a) for a in mine],
            "from_chain": True,
            "block": record.block_number,
        }
    )


def attestation_summary(record: ChainRecord) -> dict[str, Any]:
    """For `/summary`: the quorum and how many verdicts the chain holds."""
    return {
        "quorum": _quorum(),
        "total": len(record.attestations),
        "failed": sum(1 for a in record.attestations if not a.ok),
        "failed_versions": len({a.model_hash for a in record.attestations if not a.ok}),
    }


def _chain_record() -> ChainRecord:
    mirror = services().mirror
    if mirror is None:
        abort(503, description="this service has no chain connection: attestations are read from the chain")
    with mirror.lock:
        try:
            return mirror.record()
        except Exception:  # the RPC can fail in many ways
            log.warning("cannot read the chain's attestations", exc_info=True)
            abort(503, description="the chain could not be read just now; retry")


def _quorum() -> int:
    ledger = services().ledger
    return ledger.attestation_quorum() if ledger is not None else 0


def _attestation(record: ChainRecord, attestation: ev.VersionAttested) -> dict[str, Any]:
    version = record.versions.get(attestation.model_hash)
    resolution = record.resolutions.get((attestation.model_hash, attestation.auditor))
    return {
        "model_hash": attestation.model_hash,
        "version": version.version if version is not None else None,
        "auditor": attestation.auditor,
        "ok": attestation.ok,
        "report_hash": attestation.report_hash,
        "block_number": attestation.ref.block_number,
        "tx_hash": attestation.ref.tx_hash,
        "resolved": resolution is not None,
        "resolution_hash": resolution.resolution_hash if resolution is not None else None,
        "report": _report(attestation),
    }


def _report(attestation: ev.VersionAttested) -> dict[str, Any] | None:
    """The report's verdict (summary and findings) when the store holds a report about this version."""
    try:
        blob = services().store.get(attestation.report_hash)
        document = parse_untrusted_json(blob)
    except (BlobStoreError, UntrustedJsonError, OSError):
        return None
    verdict = document.get("verdict") if isinstance(document, dict) else None
    if not isinstance(verdict, dict) or verdict.get("model_hash") != attestation.model_hash:
        return None
    findings = verdict.get("findings")
    return {
        "verified": verdict.get("verified") is True,
        "summary": verdict.get("summary") if isinstance(verdict.get("summary"), str) else None,
        "findings": [
            {"kind": f.get("kind"), "subject": f.get("subject"), "role": f.get("role"), "detail": f.get("detail")}
            for f in findings
            if isinstance(f, dict)
        ]
        if isinstance(findings, list)
        else [],
    }
