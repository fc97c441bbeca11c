"""pytest plugin: a fresh in-process chain with the ledger deployed and funded node accounts.

Installed with fedledger under the `pytest11` entry point, so a user's own test suite gets these
fixtures with no conftest: `ledger_chain` (everything), `ledger_admin` and `ledger_nodes`.
Each test gets its own py-evm chain (web3's EthereumTesterProvider): nothing leaks between tests.
The chain itself comes from `ledger.chain.inprocess`; nothing at runtime imports this module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.chain.client import LedgerClient
from ledger.chain.inprocess import InProcessLedger, start_in_process_ledger


@pytest.fixture
def ledger_chain() -> Iterator[InProcessLedger]:
    """A fresh chain per test, ledger deployed, five registered and funded nodes."""
    yield start_in_process_ledger()


@pytest.fixture
def ledger_admin(ledger_chain: InProcessLedger) -> LedgerClient:
    """Client signing as the deployer (admin and aggregator)."""
    return ledger_chain.admin


@pytest.fixture
def ledger_nodes(ledger_chain: InProcessLedger) -> list[LedgerClient]:
    """Clients signing as each registered node."""
    return ledger_chain.nodes
