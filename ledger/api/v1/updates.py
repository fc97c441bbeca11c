"""`/api/v1/updates/<hash>`: every submission of an update hash, with its Merkle inclusion proof.

The proof is against the `includedRoot` the chain recorded for the version built in that round:
a client checks it with the contract's `verifyInclusion(root, update_hash, proof)` (or
`ledger.merkle.verify_proof`) without trusting this service.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify
from flask.typing import ResponseReturnValue

from ledger.api.db import get_session
from ledger.api.v1 import checked
from ledger.api.v1.common import envelope, hash_arg, hex_list, page_arg, submission
from ledger.index import queries
from ledger.index.models import ModelVersion, Submission
from ledger.core.merkle import merkle_proof, merkle_root, verify_proof

blueprint = Blueprint("api_updates", __name__)


@blueprint.get("/updates/<update_hash>")
def get_update(update_hash: str) -> ResponseReturnValue:
    session = get_session()
    wanted = hash_arg(update_hash, "update hash")
    page = page_arg()
    found = queries.submissions_of_hash(session, wanted, page)
    if found.total == 0:
        abort(404, description=f"no node submitted an update with hash {wanted} (or it is not indexed yet)")
    rounds = sorted({u.round for u in found.items})
    built = queries.versions_of_rounds(session, rounds)
    # The proofs are computed from the index's included sets: each set is checked against the
    # chain's root first, as is every submission and the version it went into.
    check = checked.chain_check(
        session,
        checked.all_of(
            checked.submissions(found.items), checked.versions(list(built.values())), checked.inclusions(session, rounds)
        ),
    )

    def with_proof(update: Submission) -> dict[str, Any]:
        return {**submission(update), "inclusion": _inclusion(session, update, built.get(update.round))}

    body: dict[str, Any] = {"update_hash": wanted}
    body["submissions"] = envelope(found, page, with_proof)
    body.update(check)
    return jsonify(body)


def _inclusion(session: Any, update: Submission, version: ModelVersion | None) -> dict[str, Any] | None:
    """The proof that `update` is under its round's version's includedRoot; None if it was not included."""
    if not update.included or version is None or version.included_root is None:
        return None
    leaves = [bytes.fromhex(h) for h in queries.included_hashes(session, update.round)]
    leaf = bytes.fromhex(update.update_hash)
    root = bytes.fromhex(version.included_root)
    if merkle_root(leaves) != root:  # the index marks inclusion only when the set matches: never expected
        return None
    proof = merkle_proof(leaves, leaf)
    return {
        "version": version.version,
        "model_hash": version.model_hash,
        "root": version.included_root,
        "leaf": update.update_hash,
        "proof": hex_list(proof),
        "verified": verify_proof(root, leaf, proof),
    }
