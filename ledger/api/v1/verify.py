"""`GET /api/v1/models/<hash>/verify`: re-derive a committed version on request and say whether it holds.

The answer comes from the chain and the blob store, never from the SQL index: the chain says what
was committed, the store's bytes are re-hashed and the recorded rule is re-run (`ledger.audit.rederive`).
Hashes are taken as the rest of /api/v1 takes them (0x optional, any case). 400 for a malformed
hash, 404 for a hash that is not a committed version, 503 when the chain cannot be read or the
store cannot be reached ("could not check" is no verdict); otherwise
200 with the verdict, whether or not the version verified.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from ledger.api.services import services
from ledger.api.v1.common import hash_arg, problem
from ledger.audit.facts import facts_from_record
from ledger.audit.rederive import read_chain_facts, rederive
from ledger.core.errors import Unavailable

log = logging.getLogger(__name__)

blueprint = Blueprint("verify", __name__)


@blueprint.get("/models/<model_hash>/verify")
def verify_model(model_hash: str) -> Response:
    """The verdict JSON (`Verdict.to_json`): `verified`, `summary`, `findings`, and what was re-derived."""
    model_hash = hash_arg(model_hash, "model hash")  # 400 unless a SHA-256; 0x and upper case accepted
    found = services()
    if found.ledger is None:
        return problem(503, "this service has no ledger configured, so there is no record to verify against")
    try:
        if found.mirror is not None:  # the service's copy of the chain's events, read up to the head now
            with found.mirror.lock:
                record = found.mirror.record()
                facts = facts_from_record(record, model_hash, attestation_quorum=found.ledger.attestation_quorum())
        else:
            facts = read_chain_facts(found.ledger, model_hash)
    except Exception:  # the RPC can fail in many ways; none of them is a verdict
        log.exception("cannot read the chain's record of %s", model_hash)
        return problem(503, "the chain could not be read; retry later", model_hash=model_hash)
    if facts is None:
        return problem(404, f"{model_hash} is not a committed model version on this ledger", model_hash=model_hash)
    try:
        verdict = rederive(facts, found.store, max_bytes=found.max_blob_bytes)
    except Unavailable as exc:  # no verdict: the blobs could not be fetched at all
        log.warning("cannot verify %s: %s", model_hash, exc)
        return problem(503, f"could not check: {exc}; retry later", model_hash=model_hash)
    if verdict.ok:
        log.info("verified version %d (%s)", verdict.version, model_hash)
    else:
        log.warning("version %d (%s) did not verify: %s", verdict.version, model_hash, verdict.summary())
    return jsonify(verdict.to_json())
