"""Shared test helpers; the chain fixtures come from the installed `ledger.testing` plugin."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.core.polling import free_port
from support import MAX_BYTES, build_wheel, h


@pytest.fixture(scope="module")
def digits():
    """The digits task's bundled split and five IID node shares (one thread: the same bits every run)."""
    import torch

    from ledger.tasks.digits import DIGITS_MLP
    from ledger.tasks.partition import split_examples

    torch.set_num_threads(1)
    split = DIGITS_MLP.bundled_data()
    return split, split_examples(split.train, 5, iid=True, seed=0)


@pytest.fixture
def store(tmp_path):
    """A blob folder that holds a few models' worth of bytes."""
    from ledger.store.local import LocalBlobStore

    return LocalBlobStore(tmp_path / "blobs", max_bytes=4 * MAX_BYTES)


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
