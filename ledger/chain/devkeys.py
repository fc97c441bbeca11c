"""anvil's well-known dev accounts, derived from its public mnemonic (devnet only, chain id 31337).

These keys are public knowledge: anyone can spend from them on any chain. The chain client
refuses them on any other chain id; this module only derives them, and never prints a key.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # eth_account takes ~0.6 s to import: only what derives keys pays for it
    from eth_account.signers.local import LocalAccount

DEV_CHAIN_ID = 31337
DEV_MNEMONIC = "test test test test test test test test test test test junk"
# The devnet funds this many accounts (anvil --accounts), enough for a 30-node federation.
DEV_ACCOUNT_COUNT = 32


@cache
def dev_account(index: int) -> LocalAccount:
    """Dev account `index` (0..9), the same one anvil funds with 10,000 ETH at genesis."""
    if not 0 <= index < DEV_ACCOUNT_COUNT:
        raise ValueError(f"dev account index must be 0..{DEV_ACCOUNT_COUNT - 1}, got {index}")
    from eth_account import Account

    # Process-wide opt-in; HD derivation is only used for these public test keys.
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


@cache
def _dev_addresses_lower() -> frozenset[str]:
    return frozenset(dev_account(index).address.lower() for index in range(DEV_ACCOUNT_COUNT))


def dev_addresses() -> frozenset[str]:
    """Checksummed addresses of every dev account the devnet funds."""
    return frozenset(dev_account(index).address for index in range(DEV_ACCOUNT_COUNT))


def is_dev_address(address: str) -> bool:
    """Whether `address` (any case) belongs to one of anvil's well-known dev accounts."""
    return address.lower() in _dev_addresses_lower()
