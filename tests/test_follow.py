"""Waiting driven by new blocks (real anvil): woken by the chain, reading only new block ranges, at rest for free."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from ledger.chain import events
from ledger.chain.client import LedgerClient
from ledger.chain.connect import connect
from ledger.chain.devkeys import dev_account
from ledger.chain.devnet import Devnet, rpc_call, throwaway_devnet
from ledger.chain.follow import LedgerFollower, NewHeads, of_type
from ledger.core.threads import pin_threads, threads_per_process

pytestmark = pytest.mark.devnet


@pytest.fixture(scope="module")
def anvil() -> Iterator[Devnet]:
    with throwaway_devnet() as devnet:
        yield devnet


def test_a_waiting_follower_is_woken_by_the_next_block_and_hands_out_only_its_events(anvil: Devnet) -> None:
    admin, _ = LedgerClient.deploy(connect(anvil.rpc_url), dev_account(0))
    admin.register_node(dev_account(1).address)  # history the follower must not hand out
    w3 = connect(anvil.rpc_url)  # the follower's own connection, so only its requests are counted
    follower = LedgerFollower.from_head(w3, admin.address)
    requests: list[str] = []
    counting = _count_requests(w3, requests)
    timer = threading.Timer(0.3, lambda: admin.register_node(dev_account(2).address))

    with counting:
        timer.start()
        found = follower.wait(timeout=30)
        timer.join()

    assert follower.heads.subscribed  # anvil offers newHeads over WebSocket on its HTTP port
    assert [(type(e), e.node) for e in found] == [(events.NodeRegistered, dev_account(2).address)]
    # Over HTTP, waiting asked only for the head, once, on subscribing: the notification carried
    # the new block's hash and parent hash, and its logs were read over the same socket.
    assert set(requests) <= {"eth_blockNumber"}
    assert follower.wait(timeout=0.2) == []  # no block, no events, and no error

    requests.clear()
    with counting:
        admin.register_node(dev_account(3).address)
        admin.register_node(dev_account(4).address)  # two blocks while the follower is busy
        found = follower.wait(timeout=30)
        if len(found) < 2:  # the second notification may still be on its way
            found += follower.wait(timeout=30)

    assert [e.node for e in of_type(found, events.NodeRegistered)] == [dev_account(3).address, dev_account(4).address]
    assert requests in ([], ["eth_getBlockByNumber"])  # nothing over HTTP (at most the cursor's block, when two came at once)


def test_a_broken_socket_falls_back_to_http_reads_and_polling(anvil: Devnet) -> None:
    w3 = connect(anvil.rpc_url)
    admin, _ = LedgerClient.deploy(w3, dev_account(0))
    follower = LedgerFollower.from_head(w3, admin.address)
    follower.heads.poll_seconds = 0.05
    assert follower.wait(timeout=0.1) == [] and follower.heads.subscribed
    follower.heads._socket.close()  # the devnet dropped the connection

    admin.register_node(dev_account(5).address)
    found = follower.wait(timeout=30)

    assert not follower.heads.subscribed  # it polls for a while before dialling again
    assert [e.node for e in of_type(found, events.NodeRegistered)] == [dev_account(5).address]
    assert follower.cursor == w3.eth.block_number


def test_without_a_websocket_the_follower_polls_the_head_and_still_reads_only_new_blocks(anvil: Devnet) -> None:
    w3 = connect(anvil.rpc_url)
    admin, _ = LedgerClient.deploy(w3, dev_account(0))
    heads = NewHeads(w3, websocket=False, poll_seconds=0.05)
    follower = LedgerFollower.from_head(w3, admin.address, heads=heads)
    admin.register_node(dev_account(3).address)

    found = follower.wait(timeout=30)

    assert not heads.subscribed
    assert of_type(found, events.NodeRegistered)[0].node == dev_account(3).address
    assert follower.cursor == w3.eth.block_number


def test_a_chain_that_went_back_is_followed_again_from_its_new_head(anvil: Devnet) -> None:
    w3 = connect(anvil.rpc_url)
    follower = LedgerFollower.from_head(w3, LedgerClient.deploy(w3, dev_account(0))[0].address)
    snapshot = rpc_call(anvil.rpc_url, "evm_snapshot")
    rpc_call(anvil.rpc_url, "anvil_mine", ["0x3"])
    follower.read()
    ahead = follower.cursor

    rpc_call(anvil.rpc_url, "evm_revert", [snapshot])

    assert follower.read() == [] and follower.cursor == ahead - 3 and follower.rewinds == 1


def test_threads_are_pinned_and_never_oversubscribe() -> None:
    assert threads_per_process(1) >= 1
    assert threads_per_process(10_000) == 1
    assert pin_threads(1) == 1
    with pytest.raises(ValueError):
        pin_threads(0)


class _count_requests:
    """Records the JSON-RPC methods `w3` sends while active."""

    def __init__(self, w3, into: list[str]) -> None:
        self.provider, self.into = w3.provider, into

    def __enter__(self) -> None:
        original = self.original = self.provider.make_request

        def counting(method, params):
            self.into.append(method)
            return original(method, params)

        self.provider.make_request = counting

    def __exit__(self, *exc_info) -> None:
        self.provider.make_request = self.original


def test_a_chain_that_went_back_without_notifying_does_not_make_waits_spin(anvil: Devnet) -> None:
    """anvil sends no newHeads notification on `evm_revert`: the notified head is then a block the
    chain no longer has. Waits must not keep returning it (the indexer's and the watcher's loops
    would spin at full speed), and the follower must rewind to the chain's real head."""
    w3 = connect(anvil.rpc_url)
    admin, _ = LedgerClient.deploy(w3, dev_account(0))
    follower = LedgerFollower.from_head(w3, admin.address)
    assert follower.wait(timeout=0.1) == [] and follower.heads.subscribed
    snapshot = rpc_call(anvil.rpc_url, "evm_snapshot")
    for index in (6, 7, 8):
        admin.register_node(dev_account(index).address)
    while follower.cursor < w3.eth.block_number:
        follower.wait(timeout=30)
    rpc_call(anvil.rpc_url, "evm_revert", [snapshot])
    real_head = w3.eth.block_number

    returns = [follower.heads.wait(after=real_head, timeout=0.2) for _ in range(5)]
    assert returns == [real_head] * 5  # each waited its timeout out: nothing past the real head

    assert follower.wait(timeout=0.2) == [] and follower.rewinds == 1 and follower.cursor == real_head
    admin.register_node(dev_account(9).address)  # the chain goes on from there, and so does the follower
    found = follower.wait(timeout=30)
    assert [e.node for e in of_type(found, events.NodeRegistered)] == [dev_account(9).address]


def test_a_socket_found_broken_by_a_zero_timeout_wait_still_gives_the_real_head(anvil: Devnet) -> None:
    w3 = connect(anvil.rpc_url)
    follower = LedgerFollower.from_head(w3, LedgerClient.deploy(w3, dev_account(0))[0].address)
    assert follower.wait(timeout=0.1) == [] and follower.heads.subscribed
    follower.heads._socket.close()

    assert follower.heads.wait(after=follower.cursor, timeout=0) == w3.eth.block_number
    assert follower.wait(timeout=0) == []
