"""The committed artifact is exactly what a fresh compile of the committed source produces."""

from __future__ import annotations

import hashlib

from ledger.artifact import load_artifact
from ledger.compile import compile_artifact, render_artifact, resolve_solc
from ledger.paths import ARTIFACT_PATH, CONTRACT_SOURCE


def test_committed_artifact_is_byte_identical_to_a_fresh_compile():
    fresh = render_artifact(compile_artifact(resolve_solc()))
    assert fresh == ARTIFACT_PATH.read_text(encoding="utf-8"), "run `fedledger contracts build` and commit"


def test_artifact_records_source_hash_compiler_and_prague():
    artifact = load_artifact()
    assert artifact.source_sha256 == hashlib.sha256(CONTRACT_SOURCE.read_bytes()).hexdigest()
    assert artifact.compiler_version.startswith("0.8.30")
    import json

    settings = json.loads(ARTIFACT_PATH.read_text())["compiler"]["settings"]
    assert settings["evmVersion"] == "prague"
    assert settings["optimizer"]["enabled"] is True


def test_compiler_resolution_prefers_env(monkeypatch, tmp_path):
    import pytest

    from ledger.compile import CompilerNotFound

    fake = tmp_path / "solc"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setenv("FEDLEDGER_SOLC", str(fake))
    assert resolve_solc() == fake
    monkeypatch.setenv("FEDLEDGER_SOLC", str(tmp_path / "missing"))
    with pytest.raises(CompilerNotFound, match="does not exist"):
        resolve_solc()
