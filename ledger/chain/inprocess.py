"""An in-process chain with the ledger deployed: py-evm inside this process, no pytest needed.

Used by `fedledger demo --chain memory`, the gas benchmark and the pytest plugin
(`ledger.testing`), which wraps it in fixtures. Each call boots its own private chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.types import Wei

from ledger.chain.client import LedgerClient
from ledger.chain.tester import SerializedTesterProvider

DEFAULT_NODE_COUNT = 5
FUNDING_WEI = 100 * 10**18


def deterministic_account(label: str) -> LocalAccount:
    """A throwaway key derived from a label, so test failures are reproducible (test chains only)."""
    return Account.from_key(keccak(text=f"fedledger-test-account:{label}"))


@dataclass
class InProcessLedger:
    """A deployed ledger on a private py-evm chain, with helpers to drive it from tests."""

    w3: Web3
    admin: LedgerClient
    nodes: list[LedgerClient] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.admin.address

    def fund(self, address: str, wei: int = FUNDING_WEI) -> None:
        self.w3.eth.send_transaction({"from": self.w3.eth.accounts[0], "to": address, "value": Wei(wei)})

    def new_account(self, label: str) -> LocalAccount:
        """A funded account that holds no role yet."""
        account = deterministic_account(label)
        self.fund(account.address)
        return account

    def client(self, account: LocalAccount) -> LedgerClient:
        return self.admin.as_account(account)

    def add_node(self, label: str) -> LedgerClient:
        """Fund, register and return a client signing as a new node."""
        node = self.client(self.new_account(label))
        self.admin.register_node(node.account.address)  # type: ignore[union-attr]
        self.nodes.append(node)
        return node

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def advance_time(self, seconds: int) -> int:
        """Move chain time forward and mine a block there; returns the new timestamp."""
        tester = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
        target = self.now() + seconds
        tester.time_travel(target)
        tester.mine_blocks(1)
        return self.now()


def start_in_process_ledger(node_count: int = DEFAULT_NODE_COUNT, *, attestation_quorum: int = 0) -> InProcessLedger:
    """Boot a py-evm chain, deploy the committed artifact as admin, register `node_count` nodes."""
    w3 = Web3(SerializedTesterProvider())
    admin_account = deterministic_account("admin")
    w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": admin_account.address, "value": Wei(FUNDING_WEI)})
    admin, _ = LedgerClient.deploy(w3, admin_account, attestation_quorum=attestation_quorum)
    ledger = InProcessLedger(w3=w3, admin=admin)
    for index in range(node_count):
        ledger.add_node(f"node-{index}")
    return ledger
