"""The packaged contract artifact is exactly what a fresh compile of the committed source produces."""

from __future__ import annotations

import hashlib

import json

from ledger.chain.artifact import artifact_bytes, load_artifact
from ledger.chain.compile import CHECKOUT_SOURCE, compile_artifact, render_artifact, resolve_solc


def test_committed_artifact_is_byte_identical_to_a_fresh_compile():
    fresh = render_artifact(compile_artifact(resolve_solc()))
    assert fresh.encode("utf-8") == artifact_bytes(), "run `fedledger contracts build` and commit"


def test_artifact_records_source_hash_compiler_and_prague():
    artifact = load_artifact()
    assert CHECKOUT_SOURCE is not None
    assert artifact.source == CHECKOUT_SOURCE.read_text(encoding="utf-8")
    assert artifact.source_sha256 == hashlib.sha256(CHECKOUT_SOURCE.read_bytes()).hexdigest()
    assert artifact.compiler_version.startswith("0.8.30")
    settings = json.loads(artifact_bytes())["compiler"]["settings"]
    assert settings["evmVersion"] == "prague"
    assert settings["optimizer"]["enabled"] is True


def test_compiler_resolution_prefers_env(monkeypatch, tmp_path):
    import pytest

    from ledger.chain.compile import CompilerNotFound

    fake = tmp_path / "solc"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setenv("FEDLEDGER_SOLC", str(fake))
    assert resolve_solc() == fake
    monkeypatch.setenv("FEDLEDGER_SOLC", str(tmp_path / "missing"))
    with pytest.raises(CompilerNotFound, match="does not exist"):
        resolve_solc()
