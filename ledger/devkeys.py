"""anvil's well-known dev accounts, derived from its public mnemonic (devnet only, chain id 31337).

These keys are public knowledge: anyone can spend from them on any chain. The chain client
refuses them on any other chain id; this module only derives them, and never prints a key.
"""

from __future__ import annotations

from functools import cache

from eth_account import Account
from eth_account.signers.local import LocalAccount

DEV_CHAIN_ID = 31337
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNT_COUNT = 10

# Checksummed addresses of dev accounts 0..9, written out so that recognising a dev key
# (to refuse it off the devnet) needs no HD derivation.
DEV_ADDRESSES: frozenset[str] = frozenset(
    {
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
        "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
        "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
        "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
        "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
        "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",
        "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f",
        "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720",
    }
)


@cache
def dev_account(index: int) -> LocalAccount:
    """Dev account `index` (0..9), the same one anvil funds with 10,000 ETH at genesis."""
    if not 0 <= index < DEV_ACCOUNT_COUNT:
        raise ValueError(f"dev account index must be 0..{DEV_ACCOUNT_COUNT - 1}, got {index}")
    # Process-wide opt-in; HD derivation is only used for these public test keys.
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def is_dev_address(address: str) -> bool:
    """Whether `address` (any case) belongs to one of anvil's well-known dev accounts."""
    return address.lower() in {a.lower() for a in DEV_ADDRESSES}
