"""Chain reads that follow the chain (`FederationView`, `SubmissionFeed`): the same facts as one full
read, from only the blocks not read yet, and read again from the start after a reorg."""

from __future__ import annotations

import hashlib

from ledger.chain import client as client_module
from ledger.chain import events
from ledger.chain.inprocess import InProcessLedger
from ledger.chain.rounds import FederationView, SubmissionFeed, committed_models, round_opened_block, round_submissions


def h(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def count_log_reads(chain: InProcessLedger, monkeypatch) -> list[tuple[int, int | str]]:
    """Record the block range of every eth_getLogs the followers make."""
    ranges: list[tuple[int, int | str]] = []
    original = events.fetch_events

    def recording(w3, address, from_block, to_block, **kwargs):  # type: ignore[no-untyped-def]
        ranges.append((from_block, to_block))
        return original(w3, address, from_block, to_block, **kwargs)

    monkeypatch.setattr(events, "fetch_events", recording)
    monkeypatch.setattr(client_module, "fetch_events", recording)
    return ranges


def test_the_view_follows_registrations_rounds_and_versions(ledger_chain: InProcessLedger, monkeypatch) -> None:
    # Prepare
    admin, nodes = ledger_chain.admin, list(ledger_chain.nodes)
    view = FederationView(admin)
    assert view.latest_model() is None and view.active_nodes() == [n.account.address for n in nodes]
    reads = count_log_reads(ledger_chain, monkeypatch)

    # Execute: genesis, a round, a revocation, a new node, a commit
    admin.commit_genesis(h("genesis"), h("meta-0"))
    admin.open_round(1, h("genesis"), ledger_chain.now() + 600, 1)
    admin.revoke_node(nodes[0].account.address)
    late = ledger_chain.add_node("late")
    nodes[1].submit_update(1, h("update"), 10)
    admin.finalize_round(1, h("model-1"), h("root"), 1, h("meta-1"))
    head_before = ledger_chain.w3.eth.block_number

    # Assert: the same facts as full reads, from one read that starts past what was already read
    active, opened, latest = view.active_nodes(), view.round_opened_block(1), view.latest_model()
    assert len(reads) == 1 and isinstance(reads[0][0], int) and reads[0][0] > 1
    reads.clear()
    view.refresh()
    assert reads == []  # nothing new since: no log read at all
    assert ledger_chain.w3.eth.block_number == head_before
    assert active == [n.account.address for n in nodes[1:]] + [late.account.address]
    assert opened == round_opened_block(admin, 1)
    assert latest == committed_models(admin)[-1].model_hash == h("model-1")


def test_a_round_never_opened_is_a_lookup_error(ledger_chain: InProcessLedger) -> None:
    view = FederationView(ledger_chain.admin)
    try:
        view.round_opened_block(7)
    except LookupError as exc:
        assert "round 7 was never opened" in str(exc)
    else:
        raise AssertionError("expected LookupError")


def test_the_feed_reads_each_submission_once_and_keeps_chain_order(ledger_chain: InProcessLedger, monkeypatch) -> None:
    admin, nodes = ledger_chain.admin, ledger_chain.nodes
    admin.commit_genesis(h("genesis"), h("meta-0"))
    admin.open_round(1, h("genesis"), ledger_chain.now() + 600, 1)
    feed = SubmissionFeed(admin, 1, round_opened_block(admin, 1))
    assert feed.read() == []
    nodes[0].submit_update(1, h("a"), 10)
    nodes[1].submit_update(1, h("b"), 20)
    first = feed.read()
    reads = count_log_reads(ledger_chain, monkeypatch)
    nodes[2].submit_update(1, h("c"), 30)

    second = feed.read()

    assert len(reads) == 1 and reads[0][0] == reads[0][1] == ledger_chain.w3.eth.block_number  # the new block only
    assert [s.update_hash for s in first] == [h("a"), h("b")]
    assert [s.update_hash for s in second] == [h("a"), h("b"), h("c")]
    assert second == round_submissions(admin, 1)


def test_after_a_reorg_the_feed_and_the_view_read_again(ledger_chain: InProcessLedger) -> None:
    # Prepare: a submission the feed has seen, then the chain goes back before it
    admin, nodes = ledger_chain.admin, ledger_chain.nodes
    tester = ledger_chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    admin.commit_genesis(h("genesis"), h("meta-0"))
    admin.open_round(1, h("genesis"), ledger_chain.now() + 600, 1)
    feed = SubmissionFeed(admin, 1, round_opened_block(admin, 1))
    view = FederationView(admin)
    view.refresh()
    snapshot = tester.take_snapshot()
    nodes[0].submit_update(1, h("dropped"), 10)
    admin.revoke_node(nodes[1].account.address)
    assert [s.update_hash for s in feed.read()] == [h("dropped")]
    assert nodes[1].account.address not in view.active_nodes()

    # Execute: the other branch has another submission and no revocation
    tester.revert_to_snapshot(snapshot)
    nodes[2].submit_update(1, h("kept"), 30)
    tester.mine_blocks(2)  # the new branch outgrows the old one

    # Assert
    assert feed.read() == round_submissions(admin, 1)
    assert [s.update_hash for s in feed.read()] == [h("kept")]
    assert view.active_nodes() == [n.account.address for n in nodes]
