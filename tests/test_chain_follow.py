"""The block follower (`LedgerFollower`) on the in-process chain: the same facts as one full read,
from only the blocks not read yet, and a rewind (read again) after a reorg."""

from __future__ import annotations

import hashlib

import pytest

from ledger.chain import events, follow
from ledger.chain.follow import LedgerFollower, NewHeads, of_type
from ledger.chain.inprocess import InProcessLedger
from ledger.chain.rounds import (
    active_nodes,
    committed_models,
    registered_nodes,
    round_opened_block,
    round_submissions,
)


def h(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def count_log_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int | str]]:
    """Record the block range of every eth_getLogs the follower makes."""
    ranges: list[tuple[int, int | str]] = []
    original = events.fetch_events

    def recording(w3, address, from_block, to_block, **kwargs):  # type: ignore[no-untyped-def]
        ranges.append((from_block, to_block))
        return original(w3, address, from_block, to_block, **kwargs)

    monkeypatch.setattr(follow, "fetch_events", recording)
    return ranges


def follower_of(chain: InProcessLedger) -> LedgerFollower:
    return LedgerFollower.from_head(chain.w3, chain.admin.address, heads=NewHeads(chain.w3, websocket=False))


def test_the_follower_keeps_nodes_rounds_and_versions_from_new_blocks_only(ledger_chain: InProcessLedger, monkeypatch) -> None:
    # Prepare
    admin, nodes = ledger_chain.admin, list(ledger_chain.nodes)
    follower = follower_of(ledger_chain)
    known = registered_nodes(admin, to_block=follower.cursor)
    start = follower.cursor
    reads = count_log_reads(monkeypatch)

    # Execute: genesis, a round, a revocation, a new node, a submission, a commit
    admin.commit_genesis(h("genesis"), h("meta-0"))
    admin.open_round(1, h("genesis"), ledger_chain.now() + 600, 1)
    admin.revoke_node(nodes[0].account.address)
    late = ledger_chain.add_node("late")
    nodes[1].submit_update(1, h("update"), 10)
    admin.finalize_round(1, h("model-1"), h("root"), 1, h("meta-1"))
    found = follower.read()
    known.apply(found)

    # Assert: the same facts as full reads, from one read that starts past what was already read
    assert reads == [(start + 1, ledger_chain.w3.eth.block_number)]
    reads.clear()
    assert follower.read() == [] and reads == []  # nothing new since: no log read at all
    assert list(known) == active_nodes(admin) == [n.account.address for n in nodes[1:]] + [late.account.address]
    assert of_type(found, events.RoundOpened)[0].ref.block_number == round_opened_block(admin, 1)
    assert of_type(found, events.ModelCommitted)[-1].model_hash == committed_models(admin)[-1].model_hash == h("model-1")


def test_a_round_never_opened_is_a_lookup_error(ledger_chain: InProcessLedger) -> None:
    with pytest.raises(LookupError, match="round 7 was never opened"):
        round_opened_block(ledger_chain.admin, 7)


def test_each_submission_is_handed_out_once_in_chain_order(ledger_chain: InProcessLedger, monkeypatch) -> None:
    admin, nodes = ledger_chain.admin, ledger_chain.nodes
    admin.commit_genesis(h("genesis"), h("meta-0"))
    admin.open_round(1, h("genesis"), ledger_chain.now() + 600, 1)
    follower = follower_of(ledger_chain)
    assert follower.read() == []
    nodes[0].submit_update(1, h("a"), 10)
    nodes[1].submit_update(1, h("b"), 20)
    first = of_type(follower.read(), events.UpdateSubmitted)
    reads = count_log_reads(monkeypatch)
    nodes[2].submit_update(1, h("c"), 30)

    second = of_type(follower.read(), events.UpdateSubmitted)

    assert len(reads) == 1 and reads[0][0] == reads[0][1] == ledger_chain.w3.eth.block_number  # the new block only
    assert [s.update_hash for s in first] == [h("a"), h("b")]
    assert [s.update_hash for s in second] == [h("c")]
    assert first + second == round_submissions(admin, 1)


def test_after_a_reorg_the_follower_rewinds_instead_of_handing_out_the_other_branch_in_part(ledger_chain: InProcessLedger) -> None:
    # Prepare: a submission and a revocation the follower has handed out, then the chain goes back before them
    admin, nodes = ledger_chain.admin, ledger_chain.nodes
    tester = ledger_chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    admin.commit_genesis(h("genesis"), h("meta-0"))
    admin.open_round(1, h("genesis"), ledger_chain.now() + 600, 1)
    follower = follower_of(ledger_chain)
    snapshot = tester.take_snapshot()
    nodes[0].submit_update(1, h("dropped"), 10)
    admin.revoke_node(nodes[1].account.address)
    handed = follower.read()
    assert [s.update_hash for s in of_type(handed, events.UpdateSubmitted)] == [h("dropped")]

    # Execute: the other branch has another submission and no revocation, and outgrows the old one
    tester.revert_to_snapshot(snapshot)
    nodes[2].submit_update(1, h("kept"), 30)
    tester.mine_blocks(2)
    after_reorg = follower.read()

    # Assert: nothing from the new branch is handed out piecemeal; the reader is told to read again
    assert after_reorg == [] and follower.rewinds == 1
    assert follower.cursor == ledger_chain.w3.eth.block_number
    assert [s.update_hash for s in round_submissions(ledger_chain.admin, 1, to_block=follower.cursor)] == [h("kept")]
    assert list(registered_nodes(admin, to_block=follower.cursor)) == [n.account.address for n in nodes]
    nodes[3].submit_update(1, h("next"), 40)
    assert [s.update_hash for s in of_type(follower.read(), events.UpdateSubmitted)] == [h("next")]
    assert follower.rewinds == 1
