"""Where signing keys come from, and the rule that public dev keys never touch a real chain.

Keys load from encrypted keystore files (password from an environment variable) or, on the
devnet only, from anvil's well-known dev accounts. Nothing here prints or logs a private key.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.chain.devkeys import DEV_CHAIN_ID, dev_account, is_dev_address


def is_in_process_chain(w3: Web3) -> bool:
    """The py-evm chain of web3's EthereumTesterProvider lives and dies with this process."""
    from web3.providers.eth_tester import EthereumTesterProvider

    return isinstance(w3.provider, EthereumTesterProvider)


def guard_dev_key(w3: Web3, address: str, chain_id: int) -> None:
    """Refuse anvil's public dev keys on any chain but the devnet (31337) and the in-process chain."""
    from ledger.chain.errors import DevKeyRefused

    if is_dev_address(address) and chain_id != DEV_CHAIN_ID and not is_in_process_chain(w3):
        raise DevKeyRefused(
            f"account {address} is one of anvil's public dev keys; they are allowed only on the "
            f"devnet (chain id {DEV_CHAIN_ID}), not on chain id {chain_id}: use an encrypted keystore"
        )


def load_keystore(path: Path, password_env: str = "FEDLEDGER_KEYSTORE_PASSWORD") -> LocalAccount:
    """Decrypt an eth-account keystore file with the password held in `password_env`."""
    from ledger.core.errors import LedgerError

    password = os.environ.get(password_env)
    if password is None:
        raise LedgerError(f"keystore {path} needs its password in the environment variable {password_env}")
    try:
        keyfile = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LedgerError(f"cannot read keystore {path}: {exc}") from exc
    try:
        private_key = Account.decrypt(keyfile, password)
    except ValueError as exc:
        raise LedgerError(f"cannot decrypt keystore {path}: wrong password or corrupt file") from exc
    return Account.from_key(private_key)


def write_keystore(account: LocalAccount, path: Path, password: str) -> Path:
    """Encrypt `account` to a keystore file readable only by its owner (0600), even when it
    replaces a file with looser permissions: a fresh 0600 temp file is renamed over the old one."""
    keyfile = Account.encrypt(account.key, password)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(keyfile, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def resolve_account(*, keystore: Path | None = None, dev_key_index: int | None = None) -> LocalAccount:
    """One of the two ways to get a signer; the client re-checks dev keys against the chain id."""
    from ledger.core.errors import LedgerError

    if (keystore is None) == (dev_key_index is None):
        raise LedgerError("give exactly one of --keystore FILE or --dev-key INDEX (devnet only)")
    if keystore is not None:
        return load_keystore(keystore)
    assert dev_key_index is not None
    return dev_account(dev_key_index)
