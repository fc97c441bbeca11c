"""`/api/v1/openapi.json`: the OpenAPI 3 description of every `/api/v1` endpoint (hand-written).

A test checks that each `/api/v1` route of the app appears here, so a new endpoint cannot ship
undocumented.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

blueprint = Blueprint("api_openapi", __name__)

_HASH = {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "SHA-256, bare lowercase hex"}
_NULLABLE_HASH = {**_HASH, "nullable": True}
_ADDRESS = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$", "description": "EIP-55 checksummed address"}
_INT = {"type": "integer", "minimum": 0}
_NULLABLE_INT = {**_INT, "nullable": True}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _page_of(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "total", "limit", "offset", "next"],
        "properties": {
            "items": {"type": "array", "items": item},
            "total": _INT,
            "limit": _INT,
            "offset": _INT,
            "next": {"type": "string", "nullable": True, "description": "URL of the next page; null on the last"},
        },
    }


def _with(base: str, **extra: dict[str, Any]) -> dict[str, Any]:
    return {"allOf": [_ref(base), {"type": "object", "properties": extra}]}


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
    },
    "Checked": {
        "type": "object",
        "required": ["checked_against_chain"],
        "description": "every answer from the index says whether its rows were compared with the chain's events",
        "properties": {
            "checked_against_chain": {"type": "boolean"},
            "checked_at_block": {**_INT, "description": "the index's block: the chain's events up to it were compared"},
            "unchecked_reason": {"type": "string", "description": "why not (no chain connection, chain unreadable)"},
        },
    },
    "Conflict": {
        "type": "object",
        "required": ["error", "detail", "differences"],
        "description": "the index disagrees with the chain; `fedledger index rebuild` repairs it",
        "properties": {
            "error": {"type": "string"},
            "detail": {"type": "string"},
            "checked_at_block": _INT,
            "differences": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "what": {"type": "string", "enum": ["cursor", "summary", "version", "round", "submission", "inclusion", "node"]},
                        "key": {"type": "string", "description": "the row: a model hash, 'round 3', 'round 3 / 0xNode…'"},
                        "field": {"type": "string"},
                        "index": {"description": "the index's value"},
                        "chain": {"description": "the value the chain's events give"},
                        "detail": {"type": "string"},
                    },
                },
            },
        },
    },
    "Reason": {
        "type": "object",
        "nullable": True,
        "properties": {
            "code": _INT,
            "name": {"type": "string", "nullable": True},
            "description": {"type": "string"},
        },
    },
    "Submission": {
        "type": "object",
        "properties": {
            "round": _INT,
            "node": _ADDRESS,
            "update_hash": _HASH,
            "num_samples": _INT,
            "rejection": _ref("Reason"),
            "included": {"type": "boolean", "nullable": True, "description": "null until known"},
            "block_number": _INT,
            "tx_hash": _HASH,
            "log_index": _INT,
        },
    },
    "Contributor": {
        "type": "object",
        "properties": {"update_hash": _HASH, "node": _ADDRESS, "num_samples": _INT},
    },
    "Version": {
        "type": "object",
        "properties": {
            "version": _INT,
            "model_hash": _HASH,
            "parent_hash": _NULLABLE_HASH,
            "round": _INT,
            "depth": {**_INT, "description": "ancestors back to genesis (0 for genesis)"},
            "included_root": _NULLABLE_HASH,
            "included_count": _INT,
            "metadata_hash": _NULLABLE_HASH,
            "metadata_loaded": {"type": "boolean"},
            "rule": {
                "type": "object",
                "nullable": True,
                "properties": {"name": {"type": "string"}, "params": {"type": "object"}},
            },
            "metrics": {"type": "object", "nullable": True, "description": "from the metadata blob, e.g. test_accuracy"},
            "privacy": {
                "type": "object",
                "nullable": True,
                "description": "private federations: node address → cumulative ε after this round",
            },
            "block_number": _INT,
            "tx_hash": _HASH,
            "log_index": _INT,
        },
    },
    "Round": {
        "type": "object",
        "properties": {
            "round": _INT,
            "state": {"type": "string", "enum": ["open", "finalized", "abandoned"]},
            "base_model_hash": _HASH,
            "deadline": {**_INT, "description": "unix seconds"},
            "min_updates": _INT,
            "opened_block": _INT,
            "opened_tx": _HASH,
            "closed_block": _NULLABLE_INT,
            "abandon_reason": _ref("Reason"),
            "submission_count": _INT,
            "rejected_count": _INT,
            "included_count": _INT,
            "model_hash": _NULLABLE_HASH,
            "version": _NULLABLE_INT,
        },
    },
    "Node": {
        "type": "object",
        "properties": {
            "address": _ADDRESS,
            "active": {"type": "boolean"},
            "registered_block": _INT,
            "revoked_block": _NULLABLE_INT,
            "submission_count": _INT,
            "included_count": _INT,
            "rejected_count": _INT,
            "last_round": {**_NULLABLE_INT, "description": "the latest round it submitted in"},
            "rejections": {
                "type": "array",
                "description": "its rejected updates, counted by reason",
                "items": {"allOf": [_ref("Reason"), {"type": "object", "properties": {"count": _INT}}]},
            },
        },
    },
    "Inclusion": {
        "type": "object",
        "nullable": True,
        "description": "check with the contract's verifyInclusion(root, leaf, proof)",
        "properties": {
            "version": _INT,
            "model_hash": _HASH,
            "root": _HASH,
            "leaf": _HASH,
            "proof": {"type": "array", "items": _HASH},
            "verified": {"type": "boolean"},
        },
    },
    "Summary": {
        "type": "object",
        "properties": {
            "contract": {**_ADDRESS, "nullable": True},
            "chain_id": _NULLABLE_INT,
            "start_block": _NULLABLE_INT,
            "indexed_block": _NULLABLE_INT,
            "indexed_block_hash": _NULLABLE_HASH,
            "head_block": _NULLABLE_INT,
            "lag_blocks": _NULLABLE_INT,
            "schema_revision": {"type": "string"},
            "nodes": {"type": "object", "properties": {"total": _INT, "active": _INT}},
            "rounds": {
                "type": "object",
                "properties": {"total": _INT, "open": _INT, "finalized": _INT, "abandoned": _INT},
            },
            "updates": {"type": "object", "properties": {"total": _INT, "rejected": _INT}},
            "versions": {"type": "object", "properties": {"total": _INT}},
            "events": {"type": "object", "properties": {"total": _INT}},
            "latest_version": {"allOf": [_ref("Version")], "nullable": True},
            "attestations": {
                "type": "object",
                "nullable": True,
                "description": "from the chain: the deployment's quorum and the auditors' verdicts so far",
                "properties": {"quorum": _INT, "total": _INT, "failed": _INT, "failed_versions": _INT},
            },
        },
    },
    "Attestation": {
        "type": "object",
        "description": "an auditor's verdict on a version, from the chain's VersionAttested event",
        "properties": {
            "model_hash": _HASH,
            "version": _NULLABLE_INT,
            "auditor": _ADDRESS,
            "ok": {"type": "boolean"},
            "report_hash": {**_HASH, "description": "SHA-256 of the auditor's JSON report (download it from /blobs/)"},
            "block_number": _INT,
            "tx_hash": _HASH,
            "resolved": {"type": "boolean", "description": "the admin lifted this failing verdict from the quorum gate"},
            "resolution_hash": _NULLABLE_HASH,
            "report": {
                "type": "object",
                "nullable": True,
                "description": "the report's verdict, when the blob store holds it",
                "properties": {
                    "verified": {"type": "boolean"},
                    "summary": {"type": "string", "nullable": True},
                    "findings": {"type": "array", "items": {"type": "object"}},
                },
            },
        },
    },
}

_PAGING = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
    {"name": "order", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"], "default": "asc"}},
]


def _path_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


_HASH_PARAM = {"type": "string", "description": "64 hex characters, optionally 0x-prefixed, any case"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _get(
    summary: str,
    ok: dict[str, Any],
    *,
    params: Sequence[dict[str, Any]] = (),
    paged: bool = True,
    errors: dict[str, str] | None = None,
    checked: bool = True,
) -> dict[str, Any]:
    """A GET operation; `checked` ones answer from the index after comparing it with the chain."""
    if checked:
        schema = ok["content"]["application/json"]["schema"]
        ok = {**ok, "content": {"application/json": {"schema": {"allOf": [schema, _ref("Checked")]}}}}
    responses: dict[str, Any] = {"200": ok, "400": _error("malformed argument")}
    if checked:
        responses["409"] = {
            "description": "the index disagrees with the chain (the differences are listed)",
            "content": {"application/json": {"schema": _ref("Conflict")}},
        }
    for code, description in (errors or {}).items():
        responses[code] = _error(description)
    return {"get": {"summary": summary, "parameters": [*params, *(_PAGING if paged else [])], "responses": responses}}


_PATHS: dict[str, Any] = {
    "/api/v1/summary": _get(
        "Which ledger the index mirrors, how far it is indexed, counts",
        _ok("the summary", _ref("Summary")),
        paged=False,
        errors={"503": "no index database configured"},
    ),
    "/api/v1/rounds": _get("Rounds, by number", _ok("a page of rounds", _page_of(_ref("Round")))),
    "/api/v1/rounds/{round}": _get(
        "One round with its submissions (paginated)",
        _ok("the round", _with("Round", submissions=_page_of(_ref("Submission")))),
        params=[_path_param("round", {"type": "integer", "minimum": 0}, "round number")],
        errors={"404": "round not opened or not indexed"},
    ),
    "/api/v1/models": _get("Committed model versions, by version", _ok("a page of versions", _page_of(_ref("Version")))),
    "/api/v1/models/{model_hash}": _get(
        "One version, its children and included updates (paginated)",
        _ok(
            "the version",
            _with(
                "Version",
                children={"type": "array", "items": _HASH},
                inclusion_known={"type": "boolean"},
                included_updates=_page_of(_ref("Contributor")),
            ),
        ),
        params=[_path_param("model_hash", _HASH_PARAM, "model hash")],
        errors={"404": "not a committed version"},
    ),
    "/api/v1/models/{model_hash}/included": _get(
        "The version's included updates, by hash",
        _ok("a page of included updates", _page_of(_ref("Contributor"))),
        params=[_path_param("model_hash", _HASH_PARAM, "model hash")],
        errors={"404": "not a committed version"},
    ),
    "/api/v1/models/{model_hash}/lineage": _get(
        "From this version back to genesis, newest first; each step embeds its first 10 included updates "
        "(by hash) as a page whose next link is /models/{model_hash}/included",
        _ok(
            "a page of lineage steps",
            {
                "allOf": [
                    _page_of(_with("Version", included_updates=_page_of(_ref("Contributor")))),
                    {"type": "object", "properties": {"model_hash": _HASH}},
                ]
            },
        ),
        params=[_path_param("model_hash", _HASH_PARAM, "model hash")],
        errors={"404": "not a committed version"},
    ),
    "/api/v1/models/{model_hash}/verify": _get(
        "Re-derive the version from the chain and the blob store (not from the index) and give the verdict",
        _ok("the verdict (whether or not it verified)", {"type": "object"}),
        params=[_path_param("model_hash", _HASH_PARAM, "model hash")],
        paged=False,
        errors={"404": "not a committed version", "503": "the chain cannot be read"},
        checked=False,
    ),
    "/api/v1/models/{model_hash}/export": {
        "get": {
            "summary": (
                "The version's export folder (safetensors and/or ONNX, its pinned metadata, provenance.json) as a tar, "
                "built from the chain and the blob store; UNSIGNED (X-Fedledger-Signed: false): check it with "
                "`fedledger export verify DIR --unsigned`, or export with your own key"
            ),
            "parameters": [
                _path_param("model_hash", _HASH_PARAM, "model hash"),
                {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["both", "onnx", "safetensors"], "default": "both"},
                    "description": "which model files the folder holds",
                },
            ],
            "responses": {
                "200": {
                    "description": "an uncompressed tar holding one folder",
                    "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
                },
                "400": _error("malformed hash or format"),
                "404": _error("not a committed version"),
                "500": _error("the export failed (e.g. ONNX parity does not hold)"),
                "503": _error("the chain or the blob store cannot be read"),
            },
        }
    },
    "/api/v1/updates/{update_hash}": _get(
        "Every submission of this update hash, each with its Merkle inclusion proof (paginated)",
        _ok(
            "the submissions",
            {
                "type": "object",
                "properties": {
                    "update_hash": _HASH,
                    "submissions": _page_of(_with("Submission", inclusion=_ref("Inclusion"))),
                },
            },
        ),
        params=[_path_param("update_hash", _HASH_PARAM, "update hash")],
        errors={"404": "no submission with this hash"},
    ),
    "/api/v1/nodes": _get("Nodes, by registration", _ok("a page of nodes", _page_of(_ref("Node")))),
    "/api/v1/nodes/{address}": _get(
        "One node and its contribution history (paginated)",
        _ok(
            "the node",
            _with(
                "Node",
                contributions=_page_of(_with("Submission", model_hash=_NULLABLE_HASH, version=_NULLABLE_INT)),
            ),
        ),
        params=[_path_param("address", {"type": "string"}, "node address, any case")],
        errors={"404": "never registered"},
    ),
    "/api/v1/attestations": _get(
        "Every auditor's verdict on every version, in chain order, with the report's findings (read from the chain)",
        _ok(
            "a page of attestations",
            {"allOf": [_page_of(_ref("Attestation")), {"type": "object", "properties": {"from_chain": {"type": "boolean"}, "block": _INT}}]},
        ),
        errors={"503": "no chain connection, or the chain cannot be read"},
        checked=False,
    ),
    "/api/v1/models/{model_hash}/attestations": _get(
        "One version's attestations, the quorum, and its ok / failed / unresolved counts (read from the chain)",
        _ok(
            "the version's attestations",
            {
                "type": "object",
                "properties": {
                    "model_hash": _HASH,
                    "version": _INT,
                    "attestation_quorum": _INT,
                    "ok_count": _INT,
                    "failed_count": _INT,
                    "unresolved_count": _INT,
                    "attestations": {"type": "array", "items": _ref("Attestation")},
                    "from_chain": {"type": "boolean"},
                    "block": _INT,
                },
            },
        ),
        params=[_path_param("model_hash", _HASH_PARAM, "model hash")],
        paged=False,
        errors={"404": "not a committed version", "503": "no chain connection, or the chain cannot be read"},
        checked=False,
    ),
    "/api/v1/privacy": _get(
        "The update encoding and privacy policy genesis pins, and each node's cumulative ε per round",
        _ok(
            "the policy and a page of rounds",
            {
                "type": "object",
                "properties": {
                    "encoding": {"type": "string", "nullable": True, "enum": ["f32", "f16", "int8"]},
                    "policy": {"type": "object", "nullable": True, "description": "null: no DP"},
                    "rounds": _page_of(
                        {
                            "type": "object",
                            "properties": {
                                "round": _INT,
                                "version": _INT,
                                "model_hash": _HASH,
                                "epsilon": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string", "pattern": "^[0-9]+\\.[0-9]{6}$"},
                                    "description": "node address → cumulative ε after this round",
                                },
                            },
                        }
                    ),
                },
            },
        ),
    ),
    "/api/v1/openapi.json": _get("This document", _ok("OpenAPI 3 document", {"type": "object"}), paged=False, checked=False),
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "fedledger audit API",
            "version": "1",
            "description": (
                "Read-only JSON over the SQL index of the FederatedLedger contract's events. The chain is the "
                "source of truth: every answer from the index is compared with the chain's events first and "
                "says so (`checked_against_chain`), or answers 409 listing where the index differs; every "
                "answer can also be checked independently (hashes, Merkle proofs, lineage)."
            ),
        },
        "paths": _PATHS,
        "components": {"schemas": _SCHEMAS},
    }


@blueprint.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    return jsonify(document())
