"""Signing keys: encrypted keystores load only with their password; dev keys stay on the devnet."""

from __future__ import annotations

import stat

import pytest
from eth_account import Account

from ledger.chain.errors import DevKeyRefused, LedgerError
from ledger.chain.keys import guard_dev_key, load_keystore, resolve_account, write_keystore


def test_keystore_round_trip_needs_the_password(tmp_path, monkeypatch):
    account = Account.from_key(b"\x11" * 32)
    path = write_keystore(account, tmp_path / "node.json", "correct horse")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert account.key.hex() not in path.read_text()  # encrypted at rest
    monkeypatch.delenv("FEDLEDGER_KEYSTORE_PASSWORD", raising=False)
    with pytest.raises(LedgerError, match="FEDLEDGER_KEYSTORE_PASSWORD"):
        load_keystore(path)
    monkeypatch.setenv("FEDLEDGER_KEYSTORE_PASSWORD", "wrong")
    with pytest.raises(LedgerError, match="wrong password or corrupt") as caught:
        load_keystore(path)
    assert account.key.hex() not in str(caught.value)
    monkeypatch.setenv("FEDLEDGER_KEYSTORE_PASSWORD", "correct horse")
    assert resolve_account(keystore=path).address == account.address


def test_overwriting_a_world_readable_keystore_leaves_it_owner_only(tmp_path, monkeypatch):
    path = tmp_path / "node.json"
    path.write_text("{}")
    path.chmod(0o644)  # e.g. copied in by hand, or written by an older version
    account = Account.from_key(b"\x22" * 32)

    write_keystore(account, path, "pw")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.json"]  # no temp file left
    monkeypatch.setenv("FEDLEDGER_KEYSTORE_PASSWORD", "pw")
    assert load_keystore(path).address == account.address


def test_malformed_keystore_and_ambiguous_key_choice_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDLEDGER_KEYSTORE_PASSWORD", "anything")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(LedgerError, match="cannot read keystore"):
        load_keystore(broken)
    with pytest.raises(LedgerError, match="exactly one"):
        resolve_account(keystore=broken, dev_key_index=0)
    with pytest.raises(LedgerError, match="exactly one"):
        resolve_account()


def test_dev_keys_are_allowed_on_the_in_process_chain_and_refused_elsewhere(ledger_chain):
    from ledger.chain.devkeys import dev_account

    guard_dev_key(ledger_chain.w3, dev_account(3).address, int(ledger_chain.w3.eth.chain_id))
    from web3 import Web3

    remote = Web3(Web3.HTTPProvider("http://127.0.0.1:9"))  # never contacted: the chain id is given
    with pytest.raises(DevKeyRefused):
        guard_dev_key(remote, dev_account(31).address, 5)
