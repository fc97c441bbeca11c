"""Shared test helpers; the chain fixtures come from the installed `ledger.testing` plugin."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.core.polling import free_port
from support import build_wheel, h


@pytest.fixture
def genesis_hash(ledger_admin) -> str:
    genesis = h("genesis")
    ledger_admin.commit_genesis(genesis, h("genesis-metadata"))
    return genesis


@pytest.fixture(scope="session")
def fedledger_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fedledger's wheel built from this checkout, once per test session."""
    return build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture
def anvil_devnet(tmp_path, monkeypatch):
    """A real anvil on a free port with its state in a temp dir; stopped even if the test fails."""
    from ledger.chain.devnet import Devnet, anvil_binary

    try:
        anvil_binary()
    except Exception as exc:  # the devnet tests need `make setup`; say so instead of erroring
        pytest.fail(f"anvil is missing: {exc}")
    monkeypatch.setenv("FEDLEDGER_HOME", str(tmp_path / "var"))
    devnet = Devnet(port=free_port(), state_dir=tmp_path / "var" / "devnet")
    devnet.start()
    try:
        yield devnet
    finally:
        devnet.stop()
