"""The anvil devnet manager: start/stop/status/reset, crash recovery, and the CLI's exit codes.

Every test gets its own free port and a temporary var dir, so a developer's own devnet on 8545
is never touched; the fixture stops anvil even when a test fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from web3 import Web3

import ledger.chain.devnet
from ledger.core.polling import free_port
from ledger.cli.main import main
from ledger.chain.devkeys import DEV_ACCOUNT_COUNT, dev_account, dev_addresses
from ledger.chain.devnet import CHAIN_ID, AnvilNotFound, Devnet, DevnetError, anvil_binary

TRANSFER_WEI = 123_456_789


def _transfer(rpc_url: str, value: int) -> tuple[int, bytes]:
    """Send `value` wei from dev account 0 to dev account 1, signed locally; (block, tx hash)."""
    w3 = Web3(Web3.HTTPProvider(rpc_url))
    sender, recipient = dev_account(0), dev_account(1)
    base_fee = w3.eth.get_block("latest")["baseFeePerGas"]
    tx = {
        "type": 2,
        "chainId": CHAIN_ID,
        "nonce": w3.eth.get_transaction_count(sender.address),
        "to": recipient.address,
        "value": value,
        "gas": 21_000,
        "maxFeePerGas": 2 * base_fee + 1,
        "maxPriorityFeePerGas": 1,
    }
    tx_hash = w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)
    assert receipt["status"] == 1
    return receipt["blockNumber"], bytes(tx_hash)


def _balance(rpc_url: str, address: str) -> int:
    return Web3(Web3.HTTPProvider(rpc_url)).eth.get_balance(address)


@pytest.fixture
def var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private var dir and devnet port, so the CLI under test sees the same devnet as the API."""
    monkeypatch.setenv("FEDLEDGER_HOME", str(tmp_path))
    monkeypatch.setenv("FEDLEDGER_DEVNET_PORT", str(free_port()))
    return tmp_path


@pytest.fixture
def devnet(var: Path) -> Iterator[Devnet]:
    """A devnet that is not started yet; whatever a test does, anvil is stopped afterwards."""
    try:
        anvil_binary()
    except AnvilNotFound as exc:
        pytest.fail(f"anvil is missing: {exc}")
    net = Devnet()
    assert net.state_dir == var / "devnet"
    yield net
    net.stop()


@pytest.mark.devnet
def test_start_reports_chain_and_cli_status_exits_0(
    devnet: Devnet, capsys: pytest.CaptureFixture[str]
) -> None:
    status = devnet.start()

    assert status.running and status.chain_id == CHAIN_ID and status.block_number == 0
    assert devnet.pid_file.read_text().strip() == str(status.pid)
    assert main(["devnet", "status"]) == 0
    assert main(["devnet", "start"]) == 0
    assert "already running" in capsys.readouterr().out
    assert devnet.pid() == status.pid


@pytest.mark.devnet
def test_dev_keys_are_the_accounts_anvil_funds(devnet: Devnet) -> None:
    devnet.start()

    accounts = Web3(Web3.HTTPProvider(devnet.rpc_url)).eth.accounts

    assert [dev_account(i).address for i in range(DEV_ACCOUNT_COUNT)] == accounts
    assert dev_addresses() == set(accounts)


@pytest.mark.devnet
def test_transfer_survives_kill_9_and_restart(devnet: Devnet) -> None:
    devnet.start()
    recipient = dev_account(1).address
    block, tx_hash = _transfer(devnet.rpc_url, TRANSFER_WEI)
    balance = _balance(devnet.rpc_url, recipient)
    block_hash = Web3(Web3.HTTPProvider(devnet.rpc_url)).eth.get_block(block)["hash"]
    devnet.wait_persisted(block)  # anvil dumps once a second: wait for it, then crash

    pid = devnet.kill_hard()
    assert pid is not None and devnet.pid_file.exists()  # a crash leaves its pid file behind
    assert not devnet.status().running
    restarted = devnet.start()

    w3 = Web3(Web3.HTTPProvider(devnet.rpc_url))
    assert restarted.pid != pid
    assert restarted.block_number == block
    assert _balance(devnet.rpc_url, recipient) == balance
    assert w3.eth.get_transaction_receipt(tx_hash)["blockNumber"] == block
    assert w3.eth.get_block(block)["hash"] == block_hash
    assert _transfer(devnet.rpc_url, 1)[0] == block + 1  # the chain goes on from where it was


@pytest.mark.devnet
def test_stop_removes_pid_file_and_cli_status_exits_3(
    devnet: Devnet, capsys: pytest.CaptureFixture[str]
) -> None:
    pid = devnet.start().pid

    assert main(["devnet", "stop"]) == 0

    assert f"stopped devnet pid {pid}" in capsys.readouterr().out
    assert not devnet.pid_file.exists()
    assert devnet.stop() is None
    assert main(["devnet", "status"]) == 3


@pytest.mark.devnet
def test_stale_pid_files_are_ignored_and_removed(devnet: Devnet, capsys: pytest.CaptureFixture[str]) -> None:
    exited = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    devnet.state_dir.mkdir(parents=True)
    devnet.pid_file.write_text(exited.stdout)

    assert not devnet.status().running
    assert main(["devnet", "stop"]) == 0
    assert "removed stale pid file" in capsys.readouterr().out
    assert not devnet.pid_file.exists()

    devnet.pid_file.write_text(f"{os.getpid()}\n")  # a live pid that is not anvil (reused)
    status = devnet.start()
    assert status.running and status.pid != os.getpid()


@pytest.mark.devnet
def test_reset_wipes_the_chain(devnet: Devnet, capsys: pytest.CaptureFixture[str]) -> None:
    devnet.start()
    block, _ = _transfer(devnet.rpc_url, TRANSFER_WEI)
    devnet.wait_persisted(block)
    fresh_balance = 10_000 * 10**18

    assert main(["devnet", "reset"]) == 0

    assert "block 0" in capsys.readouterr().out
    assert devnet.status().block_number == 0
    assert _balance(devnet.rpc_url, dev_account(1).address) == fresh_balance


@pytest.mark.devnet
def test_start_refuses_a_port_another_node_answers_on(devnet: Devnet, tmp_path: Path) -> None:
    other = Devnet(port=devnet.port, state_dir=tmp_path / "other")
    other.start()
    try:
        with pytest.raises(DevnetError, match="already answers JSON-RPC"):
            devnet.start()
    finally:
        other.stop()


@pytest.mark.devnet
def test_start_failure_shows_the_log_tail(devnet: Devnet) -> None:
    with socket.socket() as squatter:  # listens but never speaks JSON-RPC: anvil cannot bind
        squatter.bind(("127.0.0.1", devnet.port))
        squatter.listen()
        with pytest.raises(DevnetError, match="Address already in use"):
            devnet.start(timeout=10)

    assert not devnet.pid_file.exists()


def test_corrupt_state_file_is_refused_with_a_way_out(var: Path) -> None:
    net = Devnet()
    net.state_dir.mkdir(parents=True)
    net.state_file.write_text('{"block": {"numb')  # what a kill -9 during anvil's rewrite leaves

    with pytest.raises(DevnetError, match="devnet reset"):
        net.start()


def test_missing_binary_names_every_way_to_get_it(
    var: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ledger.chain.devnet, "devnet_toolchain_dirs", lambda: [tmp_path / "empty"])
    monkeypatch.delenv("FEDLEDGER_ANVIL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))

    with pytest.raises(AnvilNotFound, match="FEDLEDGER_ANVIL.*PATH.*make setup"):
        Devnet().start()
    assert main(["devnet", "start"]) == 1
    assert "make setup" in capsys.readouterr().err


def test_anvil_is_found_through_fedledger_anvil(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = anvil_binary()
    monkeypatch.setattr(ledger.chain.devnet, "devnet_toolchain_dirs", lambda: [])
    monkeypatch.setenv("FEDLEDGER_ANVIL", str(real))
    assert anvil_binary() == real
    monkeypatch.setenv("FEDLEDGER_ANVIL", str(tmp_path / "nope"))
    with pytest.raises(AnvilNotFound, match="FEDLEDGER_ANVIL"):
        anvil_binary()


def test_dev_account_derivation_is_bounded() -> None:
    assert dev_account(0).address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    with pytest.raises(ValueError):
        dev_account(DEV_ACCOUNT_COUNT)


@pytest.mark.devnet
def test_the_persister_writes_only_after_the_chain_moved_and_leaves_with_anvil(devnet: Devnet) -> None:
    from ledger.core.polling import WaitTimeout, poll_until

    devnet.start()
    block, _ = _transfer(devnet.rpc_url, 1)
    devnet.wait_persisted(block)
    written = devnet.state_file.stat().st_mtime_ns
    persister = int(devnet.persister_pid_file.read_text())

    ledger.chain.devnet.rpc_call(devnet.rpc_url, "eth_chainId")  # a quiet chain: reads only
    with pytest.raises(WaitTimeout):
        poll_until(lambda: devnet.state_file.stat().st_mtime_ns != written, timeout=3, interval=0.2, what="a rewrite")
    devnet.kill_hard()

    poll_until(lambda: not ledger.chain.devnet.process_alive(persister), timeout=10, interval=0.1, what="the persister to leave")
