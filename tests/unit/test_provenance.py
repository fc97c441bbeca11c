"""The export statement (`ledger.export.provenance`): built, encoded, decoded, compared — pure."""

from __future__ import annotations

import json
import re

import pytest

from ledger.core.hashing import sha256_hex
from ledger.export.provenance import (
    CHAIN_SECTIONS,
    Attestation,
    ChainRecord,
    ProvenanceError,
    Recipe,
    build_statement,
    decode_statement,
    differences,
    encode_statement,
)


def h(label: str) -> str:
    return sha256_hex(label.encode())


RECORD = ChainRecord(
    chain_id=31337,
    contract="0x5FbDB2315678afecb367f032d93F642f64180aa3",
    transaction="0x" + h("tx"),
    block=42,
    model_hash=h("model-2"),
    version=2,
    round=2,
    parent_hash=h("model-1"),
    included_root=h("root"),
    included_count=5,
    metadata_hash=h("metadata-2"),
    genesis_model_hash=h("model-0"),
    genesis_metadata_hash=h("metadata-0"),
    attestations=(Attestation("0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65", True, h("report"), "0x" + h("tx-a"), 43),),
)
RECIPE = Recipe(
    rule="trimmed_mean", params={"trim_ratio": 0.2}, task={"name": "digits-mlp", "version": "1", "specHash": h("spec"), "seed": 0}
)


def _statement() -> dict:
    return build_statement({"model.onnx": h("onnx"), "genesis.json": h("g")}, RECORD, RECIPE, {"signed": True})


def test_a_statement_round_trips_through_its_canonical_bytes() -> None:
    encoded = encode_statement(_statement())

    decoded = decode_statement(encoded)

    assert encoded == encode_statement(json.loads(encoded))  # canonical: sorted keys, no whitespace
    assert encoded.endswith(b"}\n")
    assert decoded.subjects == {"genesis.json": h("g"), "model.onnx": h("onnx")}
    assert decoded.model_hash == h("model-2")
    assert decoded.predicate["aggregation"] == {"rule": "trimmed_mean", "params": {"trim_ratio": 0.2}}
    assert decoded.predicate["attestations"][0]["block"] == 43
    assert [s["name"] for s in json.loads(encoded)["subject"]] == ["genesis.json", "model.onnx"]


def test_differences_name_each_field_and_tell_json_types_apart() -> None:
    claimed = json.loads(encode_statement(_statement()))["predicate"]
    claimed["model"]["round"] = 3
    claimed["commit"]["block"] = 42.0
    claimed["round"]["includedRoot"] = None

    found = differences(claimed, RECORD.to_json(), CHAIN_SECTIONS)

    assert found == [
        ("commit.block", 42.0, 42),
        ("model.round", 3, 2),
        ("round.includedRoot", None, h("root")),
    ]
    assert differences(RECORD.to_json(), RECORD.to_json(), CHAIN_SECTIONS) == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update(_type="https://in-toto.io/Statement/v0.1"), "not an in-toto Statement v1"),
        (lambda s: s.update(predicateType="https://slsa.dev/provenance/v1"), "predicateType"),
        (lambda s: s.update(subject=[]), "at least one subject"),
        (lambda s: s["subject"][0].update(name="../model.onnx"), "subject[0] must be a distinct plain file name"),
        (lambda s: s["subject"][1].update(name=s["subject"][0]["name"]), "subject[1]"),
        (lambda s: s["subject"][0]["digest"].update(sha256="abc"), "sha256 digest"),
        (lambda s: s["predicate"].pop("commit"), "'commit' must be an object"),
        (lambda s: s["predicate"]["model"].update(hash=None), "model.hash"),
        (lambda s: s["predicate"].update(attestations={}), "'attestations' must be a list"),
        (lambda s: s["predicate"].pop("attestationGate"), "'attestationGate' must be an object"),
    ],
)
def test_malformed_statements_are_refused_naming_the_field(mutate, message: str) -> None:
    statement = json.loads(encode_statement(_statement()))
    mutate(statement)

    with pytest.raises(ProvenanceError, match=re.escape(message)):
        decode_statement(json.dumps(statement).encode())


def test_bytes_that_are_not_json_or_nest_too_deep_are_refused() -> None:
    with pytest.raises(ProvenanceError, match="not usable JSON"):
        decode_statement(b"\xff\xfe")
    with pytest.raises(ProvenanceError, match="not usable JSON"):
        decode_statement(b"[" * 100 + b"]" * 100)

