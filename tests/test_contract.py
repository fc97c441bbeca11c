"""FederatedLedger on the in-process chain: every function, revert path and role check."""

from __future__ import annotations

import pytest

from support import h
from ledger.chain import errors, events
from ledger.chain.client import RoundState
from ledger.core.merkle import merkle_proof, merkle_root

ZERO = "00" * 32
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


@pytest.fixture
def open_round(ledger_chain, genesis_hash):
    deadline = ledger_chain.now() + 600
    ledger_chain.admin.open_round(1, genesis_hash, deadline, 2)
    return deadline


def only(result, event_type):
    matching = [e for e in result.events if isinstance(e, event_type)]
    assert len(matching) == 1, result.events
    return matching[0]


# ------------------------------------------------------------------ deployment and roles


def test_deployer_is_admin_and_aggregator(ledger_chain):
    admin = ledger_chain.admin
    assert admin.admin() == admin.account.address
    assert admin.is_aggregator(admin.account.address)
    assert not admin.is_node(admin.account.address)
    deployed = admin.events(event_type=events.AdminTransferred)
    assert [(e.previous_admin, e.new_admin) for e in deployed] == [(ZERO_ADDRESS, admin.account.address)]


def test_register_and_revoke_node_emit_events(ledger_chain):
    admin = ledger_chain.admin
    newcomer = ledger_chain.new_account("newcomer")
    registered = only(admin.register_node(newcomer.address), events.NodeRegistered)
    assert registered.node == newcomer.address
    assert admin.is_node(newcomer.address)
    revoked = only(admin.revoke_node(newcomer.address), events.NodeRevoked)
    assert revoked.node == newcomer.address
    assert not admin.is_node(newcomer.address)
    admin.register_node(newcomer.address)  # a revoked node may be registered again
    assert admin.is_node(newcomer.address)


def test_register_twice_reverts_with_node(ledger_chain, ledger_nodes):
    node = ledger_nodes[0].account.address
    with pytest.raises(errors.NodeAlreadyRegistered) as caught:
        ledger_chain.admin.register_node(node)
    assert caught.value.node == node


def test_register_zero_address_reverts(ledger_admin):
    with pytest.raises(errors.ZeroAddress):
        ledger_admin.register_node(ZERO_ADDRESS)


def test_revoke_unregistered_reverts(ledger_chain):
    stranger = ledger_chain.new_account("stranger")
    with pytest.raises(errors.NotNode) as caught:
        ledger_chain.admin.revoke_node(stranger.address)
    assert caught.value.account == stranger.address


@pytest.mark.parametrize("action", ["register_node", "revoke_node", "transfer_admin"])
def test_admin_only_functions_refuse_others(ledger_chain, ledger_nodes, action):
    node = ledger_nodes[0]
    with pytest.raises(errors.NotAdmin) as caught:
        getattr(node, action)(ledger_nodes[1].account.address)
    assert caught.value.account == node.account.address


def test_set_aggregator_refuses_non_admin(ledger_nodes):
    node = ledger_nodes[0]
    with pytest.raises(errors.NotAdmin) as caught:
        node.set_aggregator(node.account.address, True)
    assert caught.value.account == node.account.address


def test_set_aggregator_grants_removes_and_refuses_no_op(ledger_chain):
    admin = ledger_chain.admin
    helper = ledger_chain.new_account("aggregator-2")
    granted = only(admin.set_aggregator(helper.address, True), events.AggregatorSet)
    assert (granted.account, granted.enabled) == (helper.address, True)
    assert admin.is_aggregator(helper.address)
    with pytest.raises(errors.AggregatorUnchanged) as caught:
        admin.set_aggregator(helper.address, True)
    assert (caught.value.account, caught.value.enabled) == (helper.address, True)
    removed = only(admin.set_aggregator(helper.address, False), events.AggregatorSet)
    assert removed.enabled is False
    assert not admin.is_aggregator(helper.address)
    with pytest.raises(errors.ZeroAddress):
        admin.set_aggregator(ZERO_ADDRESS, True)


def test_admin_hand_over_takes_two_steps(ledger_chain):
    admin = ledger_chain.admin
    successor = ledger_chain.client(ledger_chain.new_account("successor"))
    stranger = ledger_chain.client(ledger_chain.new_account("stranger"))
    offered = only(admin.transfer_admin(successor.account.address), events.AdminTransferStarted)
    assert (offered.previous_admin, offered.new_admin) == (admin.account.address, successor.account.address)
    assert admin.admin() == admin.account.address  # nothing moved yet
    assert admin.pending_admin() == successor.account.address
    with pytest.raises(errors.NotPendingAdmin) as refused:
        stranger.accept_admin()
    assert refused.value.account == stranger.account.address
    moved = only(successor.accept_admin(), events.AdminTransferred)
    assert (moved.previous_admin, moved.new_admin) == (admin.account.address, successor.account.address)
    assert admin.admin() == successor.account.address and admin.pending_admin() is None
    with pytest.raises(errors.NotAdmin):
        admin.register_node(successor.account.address)
    with pytest.raises(errors.ZeroAddress):
        successor.transfer_admin(ZERO_ADDRESS)


def test_second_aggregator_can_run_rounds(ledger_chain, genesis_hash):
    second = ledger_chain.client(ledger_chain.new_account("aggregator-2"))
    ledger_chain.admin.set_aggregator(second.account.address, True)
    second.open_round(1, genesis_hash, ledger_chain.now() + 60, 1)
    assert second.get_round(1).state is RoundState.OPEN


# ------------------------------------------------------------------ genesis


def test_commit_genesis_is_version_zero(ledger_admin):
    result = ledger_admin.commit_genesis(h("g"), h("g-meta"))
    committed = only(result, events.ModelCommitted)
    assert (committed.round, committed.version, committed.parent_hash) == (0, 0, None)
    assert (committed.model_hash, committed.metadata_hash, committed.included_count) == (h("g"), h("g-meta"), 0)
    assert ledger_admin.genesis_hash() == h("g")
    assert ledger_admin.model_of(h("g")).version == 0
    assert ledger_admin.counters().version_count == 1


def test_commit_genesis_twice_reverts(ledger_admin, genesis_hash):
    with pytest.raises(errors.GenesisAlreadyCommitted) as caught:
        ledger_admin.commit_genesis(h("other"), h("m"))
    assert caught.value.genesisHash.hex() == genesis_hash


def test_commit_genesis_zero_hash_and_role(ledger_admin, ledger_nodes):
    with pytest.raises(errors.ZeroHash):
        ledger_admin.commit_genesis(ZERO, h("m"))
    with pytest.raises(errors.NotAggregator) as caught:
        ledger_nodes[0].commit_genesis(h("g"), h("m"))
    assert caught.value.account == ledger_nodes[0].account.address


# ------------------------------------------------------------------ opening rounds


def test_open_round_records_and_emits(ledger_chain, genesis_hash):
    deadline = ledger_chain.now() + 300
    opened = only(ledger_chain.admin.open_round(1, genesis_hash, deadline, 3), events.RoundOpened)
    assert (opened.round, opened.base_model_hash, opened.deadline, opened.min_updates) == (
        1,
        genesis_hash,
        deadline,
        3,
    )
    info = ledger_chain.admin.get_round(1)
    assert (info.base_model_hash, info.deadline, info.min_updates, info.state) == (
        genesis_hash,
        deadline,
        3,
        RoundState.OPEN,
    )
    assert ledger_chain.admin.counters().last_round == 1


def test_open_round_needs_genesis(ledger_chain):
    with pytest.raises(errors.ModelNotCommitted) as caught:
        ledger_chain.admin.open_round(1, h("never"), ledger_chain.now() + 60, 1)
    assert caught.value.modelHash.hex() == h("never")


@pytest.mark.parametrize("round_number", [0, 2, 7])
def test_open_round_out_of_order(ledger_chain, genesis_hash, round_number):
    with pytest.raises(errors.RoundOutOfOrder) as caught:
        ledger_chain.admin.open_round(round_number, genesis_hash, ledger_chain.now() + 60, 1)
    assert (caught.value.expected, caught.value.round) == (1, round_number)


def test_open_round_while_previous_open(ledger_chain, genesis_hash, open_round):
    with pytest.raises(errors.RoundStillOpen) as caught:
        ledger_chain.admin.open_round(2, genesis_hash, ledger_chain.now() + 60, 1)
    assert caught.value.round == 1


def test_open_round_deadline_must_be_future(ledger_chain, genesis_hash):
    now = ledger_chain.now()
    with pytest.raises(errors.DeadlineNotInFuture) as caught:
        ledger_chain.admin.open_round(1, genesis_hash, now - 1, 1)
    assert caught.value.deadline == now - 1


def test_open_round_min_updates_and_role(ledger_chain, genesis_hash, ledger_nodes):
    with pytest.raises(errors.ZeroMinUpdates):
        ledger_chain.admin.open_round(1, genesis_hash, ledger_chain.now() + 60, 0)
    with pytest.raises(errors.NotAggregator):
        ledger_nodes[0].open_round(1, genesis_hash, ledger_chain.now() + 60, 1)


# ------------------------------------------------------------------ submissions


def test_submit_update_records_and_emits(ledger_chain, ledger_nodes, open_round):
    node = ledger_nodes[0]
    submitted = only(node.submit_update(1, h("u0"), 120), events.UpdateSubmitted)
    assert (submitted.round, submitted.node, submitted.update_hash, submitted.num_samples) == (
        1,
        node.account.address,
        h("u0"),
        120,
    )
    assert ledger_chain.admin.submission_of(1, node.account.address) == h("u0")
    assert ledger_chain.admin.submission_of(1, ledger_nodes[1].account.address) is None


def test_submit_twice_reverts_with_round_and_node(ledger_nodes, open_round):
    node = ledger_nodes[0]
    node.submit_update(1, h("u0"), 10)
    with pytest.raises(errors.AlreadySubmitted) as caught:
        node.submit_update(1, h("u0-again"), 10)
    assert (caught.value.round, caught.value.node) == (1, node.account.address)


def test_submit_by_unregistered_or_revoked(ledger_chain, ledger_nodes, open_round):
    stranger = ledger_chain.client(ledger_chain.new_account("stranger"))
    with pytest.raises(errors.NotNode) as caught:
        stranger.submit_update(1, h("s"), 1)
    assert caught.value.account == stranger.account.address
    revoked = ledger_nodes[1]
    ledger_chain.admin.revoke_node(revoked.account.address)
    with pytest.raises(errors.NotNode):
        revoked.submit_update(1, h("r"), 1)


def test_submit_zero_hash_or_samples(ledger_nodes, open_round):
    with pytest.raises(errors.ZeroHash):
        ledger_nodes[0].submit_update(1, ZERO, 1)
    with pytest.raises(errors.ZeroSamples):
        ledger_nodes[0].submit_update(1, h("u"), 0)


def test_submit_to_unopened_round(ledger_nodes, genesis_hash):
    with pytest.raises(errors.RoundNotOpen) as caught:
        ledger_nodes[0].submit_update(1, h("u"), 1)
    assert caught.value.round == 1


def test_submit_at_deadline_passes_after_deadline_reverts(ledger_chain, ledger_nodes, open_round):
    deadline = open_round
    ledger_chain.advance_time(deadline - ledger_chain.now() - 1)
    ledger_nodes[0].submit_update(1, h("u0"), 1)  # mined exactly at the deadline: still accepted
    with pytest.raises(errors.DeadlinePassed) as caught:
        ledger_nodes[1].submit_update(1, h("u1"), 1)
    assert (caught.value.round, caught.value.deadline) == (1, deadline)


# ------------------------------------------------------------------ rejections


def test_reject_update_records_reason(ledger_chain, ledger_nodes, open_round):
    node = ledger_nodes[0].account.address
    ledger_nodes[0].submit_update(1, h("bad"), 5)
    rejected = only(ledger_chain.admin.reject_update(1, node, 7), events.UpdateRejected)
    assert (rejected.round, rejected.node, rejected.update_hash, rejected.reason_code) == (1, node, h("bad"), 7)
    assert ledger_chain.admin.rejection_of(1, node) == 7
    with pytest.raises(errors.AlreadyRejected) as caught:
        ledger_chain.admin.reject_update(1, node, 3)
    assert (caught.value.round, caught.value.node) == (1, node)


def test_reject_needs_submission_reason_role_and_open_round(ledger_chain, ledger_nodes, open_round):
    node = ledger_nodes[0].account.address
    with pytest.raises(errors.NoSubmission) as caught:
        ledger_chain.admin.reject_update(1, node, 1)
    assert (caught.value.round, caught.value.node) == (1, node)
    ledger_nodes[0].submit_update(1, h("u"), 5)
    with pytest.raises(errors.ZeroReason):
        ledger_chain.admin.reject_update(1, node, 0)
    with pytest.raises(errors.NotAggregator):
        ledger_nodes[1].reject_update(1, node, 1)
    with pytest.raises(errors.RoundNotOpen):
        ledger_chain.admin.reject_update(2, node, 1)


def test_reject_updates_records_each_rejection_in_order(ledger_chain, ledger_nodes, open_round):
    nodes = [n.account.address for n in ledger_nodes[:3]]
    for index, node in enumerate(ledger_nodes[:3]):
        node.submit_update(1, h(f"bad-{index}"), 5)

    results = ledger_chain.admin.reject_updates(1, [(nodes[0], 7), (nodes[1], 2), (nodes[2], 9)])

    rejected = [only(result, events.UpdateRejected) for result in results]
    assert [(r.node, r.update_hash, r.reason_code) for r in rejected] == [
        (nodes[0], h("bad-0"), 7),
        (nodes[1], h("bad-1"), 2),
        (nodes[2], h("bad-2"), 9),
    ]
    assert [ledger_chain.admin.rejection_of(1, n) for n in nodes] == [7, 2, 9]
    assert ledger_chain.admin.reject_updates(1, []) == []


def test_reject_updates_raises_the_typed_error_of_a_call_that_reverts(ledger_chain, ledger_nodes, open_round):
    first, second = (n.account.address for n in ledger_nodes[:2])
    for index, node in enumerate(ledger_nodes[:2]):
        node.submit_update(1, h(f"bad-{index}"), 5)
    ledger_chain.admin.reject_update(1, second, 4)

    with pytest.raises(errors.AlreadyRejected) as caught:  # the second call reverts once mined
        ledger_chain.admin.reject_updates(1, [(first, 7), (second, 7)])

    assert (caught.value.round, caught.value.node) == (1, second)
    assert ledger_chain.admin.rejection_of(1, first) == 7 and ledger_chain.admin.rejection_of(1, second) == 4
    with pytest.raises(errors.NoSubmission):  # the first is estimated: refused before anything is sent
        ledger_chain.admin.reject_updates(1, [(ledger_nodes[2].account.address, 1)])


# ------------------------------------------------------------------ finalizing


def test_finalize_commits_next_version(ledger_chain, ledger_nodes, genesis_hash, open_round):
    hashes = [h(f"u{i}") for i in range(3)]
    for node, update in zip(ledger_nodes, hashes):
        node.submit_update(1, update, 10)
    root = merkle_root([bytes.fromhex(x) for x in hashes])
    result = ledger_chain.admin.finalize_round(1, h("model-1"), root, 3, h("meta-1"))
    committed = only(result, events.ModelCommitted)
    assert (committed.round, committed.model_hash, committed.parent_hash, committed.version) == (
        1,
        h("model-1"),
        genesis_hash,
        1,
    )
    assert (committed.included_root, committed.included_count, committed.metadata_hash) == (
        root.hex(),
        3,
        h("meta-1"),
    )
    assert ledger_chain.admin.get_round(1).state is RoundState.FINALIZED
    model = ledger_chain.admin.model_of(h("model-1"))
    assert (model.version, model.round, model.included_count) == (1, 1, 3)
    for update in hashes:
        proof = merkle_proof([bytes.fromhex(x) for x in hashes], bytes.fromhex(update))
        assert ledger_chain.admin.verify_inclusion(root, update, proof)
    assert not ledger_chain.admin.verify_inclusion(root, h("not-included"), proof)


def test_finalize_before_deadline_needs_min_updates(ledger_chain, open_round):
    with pytest.raises(errors.TooFewUpdates) as caught:
        ledger_chain.admin.finalize_round(1, h("m"), h("root"), 1, h("meta"))
    assert (caught.value.round, caught.value.includedCount, caught.value.minUpdates) == (1, 1, 2)


def test_finalize_after_deadline_accepts_fewer_but_not_zero(ledger_chain, open_round):
    ledger_chain.advance_time(open_round - ledger_chain.now() + 1)
    with pytest.raises(errors.TooFewUpdates) as caught:
        ledger_chain.admin.finalize_round(1, h("m"), h("root"), 0, h("meta"))
    assert caught.value.minUpdates == 1
    ledger_chain.admin.finalize_round(1, h("m"), h("root"), 1, h("meta"))
    assert ledger_chain.admin.get_round(1).state is RoundState.FINALIZED


def test_finalize_closes_round_for_submissions(ledger_chain, ledger_nodes, open_round):
    ledger_chain.admin.finalize_round(1, h("m"), h("root"), 2, h("meta"))
    with pytest.raises(errors.RoundNotOpen):
        ledger_nodes[0].submit_update(1, h("late"), 1)
    with pytest.raises(errors.RoundNotOpen):
        ledger_chain.admin.finalize_round(1, h("m2"), h("root"), 2, h("meta"))


def test_finalize_refuses_known_model_zero_hashes_and_non_aggregator(
    ledger_chain, ledger_nodes, genesis_hash, open_round
):
    with pytest.raises(errors.ModelAlreadyCommitted) as caught:
        ledger_chain.admin.finalize_round(1, genesis_hash, h("root"), 2, h("meta"))
    assert caught.value.modelHash.hex() == genesis_hash
    with pytest.raises(errors.ZeroHash):
        ledger_chain.admin.finalize_round(1, ZERO, h("root"), 2, h("meta"))
    with pytest.raises(errors.ZeroHash):
        ledger_chain.admin.finalize_round(1, h("m"), ZERO, 2, h("meta"))
    with pytest.raises(errors.NotAggregator):
        ledger_nodes[0].finalize_round(1, h("m"), h("root"), 2, h("meta"))


def test_next_round_builds_on_committed_version(ledger_chain, open_round):
    ledger_chain.admin.finalize_round(1, h("m1"), h("root"), 2, h("meta"))
    ledger_chain.admin.open_round(2, h("m1"), ledger_chain.now() + 60, 1)
    assert ledger_chain.admin.get_round(2).base_model_hash == h("m1")
    assert ledger_chain.admin.counters().last_round == 2


# ------------------------------------------------------------------ abandoning


def test_abandon_only_after_deadline(ledger_chain, ledger_nodes, open_round):
    with pytest.raises(errors.DeadlineNotPassed) as caught:
        ledger_chain.admin.abandon_round(1, 2)
    assert (caught.value.round, caught.value.deadline) == (1, open_round)
    with pytest.raises(errors.NotAggregator):
        ledger_nodes[0].abandon_round(1, 2)
    ledger_chain.advance_time(open_round - ledger_chain.now() + 1)
    abandoned = only(ledger_chain.admin.abandon_round(1, 2), events.RoundAbandoned)
    assert (abandoned.round, abandoned.reason_code) == (1, 2)
    assert ledger_chain.admin.get_round(1).state is RoundState.ABANDONED
    with pytest.raises(errors.RoundNotOpen):
        ledger_chain.admin.abandon_round(1, 2)
    ledger_chain.admin.open_round(2, ledger_chain.admin.genesis_hash(), ledger_chain.now() + 60, 1)


# ------------------------------------------------------------------ reading events back


def test_events_filter_by_type_and_indexed_node(ledger_chain, ledger_nodes, open_round):
    for index, node in enumerate(ledger_nodes[:3]):
        node.submit_update(1, h(f"u{index}"), 10 + index)
    submitted = ledger_chain.admin.events(event_type=events.UpdateSubmitted)
    assert [e.num_samples for e in submitted] == [10, 11, 12]
    node = ledger_nodes[1].account.address
    node_topic = "0x" + "00" * 12 + node[2:].lower()
    mine = ledger_chain.admin.events(event_type=events.UpdateSubmitted, topic_filters=[None, node_topic])
    assert [(e.node, e.update_hash) for e in mine] == [(node, h("u1"))]
    refs = [(e.ref.block_number, e.ref.log_index) for e in ledger_chain.admin.events()]
    assert refs == sorted(refs)


def test_read_only_client_cannot_write(ledger_chain):
    from ledger.chain.client import LedgerClient
    from ledger.core.errors import LedgerError

    reader = LedgerClient(ledger_chain.w3, ledger_chain.address)
    assert reader.counters().version_count == 0
    with pytest.raises(LedgerError, match="read-only"):
        reader.register_node(ledger_chain.new_account("x").address)


def test_every_contract_error_has_a_python_class():
    from ledger.chain.artifact import load_artifact
    from ledger.chain.errors import _error_classes

    abi_errors = {item["name"] for item in load_artifact().abi_items("error")}
    assert abi_errors == set(_error_classes())


# ------------------------------------------------------------------ the client's in-process path


def test_in_process_calls_answer_as_web3_did_without_web3_requests(ledger_chain, genesis_hash, open_round):
    """On the in-process chain the client encodes calls from the ABI and hands them to eth-tester
    (`ledger.chain.tester`): each view answers what web3's contract layer answers, at "latest"
    and at a block number, without a single request through web3; a block hash names its block;
    a revert is its typed error from a call and from preparing a transaction."""
    admin = ledger_chain.admin
    node = ledger_chain.nodes[0]
    digest = bytes.fromhex("11" * 32)
    views = [
        ("admin", ()), ("attestationQuorum", ()), ("counters", ()), ("genesisHash", ()), ("getRound", (1,)),
        ("isNode", (node.account.address,)), ("attestationCounts", (digest,)), ("hashSubmission", (1, digest, 5)),
        ("modelOf", (digest,)), ("submissionOf", (1, node.account.address)), ("verifyInclusion", (digest, digest, [])),
        ("eip712Domain", ()),
    ]  # fmt: skip
    number = ledger_chain.w3.eth.block_number
    requests: list[str] = []

    class Recorded(dict):
        """web3's eth-tester provider looks every request's namespace up here."""

        def __getitem__(self, namespace):
            requests.append(namespace)
            return super().__getitem__(namespace)

    provider = ledger_chain.w3.provider
    endpoints = provider.api_endpoints
    provider.api_endpoints = Recorded(endpoints)
    try:
        ledger_chain.w3.eth.block_number  # the spy sees a request through web3
        assert requests == ["eth"]
        requests.clear()
        answers = {(name, at): admin._call(name, *args, block=at) for name, args in views for at in ("latest", number)}
    finally:
        provider.api_endpoints = endpoints
    assert requests == []
    for (name, at), ours in answers.items():
        web3s = getattr(admin.contract.functions, name)(*dict(views)[name]).call(block_identifier=at)
        assert ours == _as_tuples(web3s), (name, at)
    at_hash = ledger_chain.w3.eth.get_block(number)["hash"]
    late = ledger_chain.add_node("late").account.address
    assert admin._call("isNode", late) is True
    assert admin._call("isNode", late, block=at_hash) is False
    assert admin._call("isNode", late, block=at_hash.to_0x_hex()) is False

    with pytest.raises(errors.NotAdmin):
        node._call("registerNode", node.account.address)
    with pytest.raises(errors.NotAdmin):
        node.prepare("registerNode", node.account.address)
    with pytest.raises(errors.RoundNotOpen):
        node.prepare("submitUpdate", 2, digest, 5)

    # reading needs no funds: an account that never held any reads, now and at an early block
    from ledger.chain.client import LedgerClient
    from ledger.chain.inprocess import deterministic_account

    reader = LedgerClient(ledger_chain.w3, admin.address, deterministic_account("never funded"))
    assert reader.is_node(node.account.address) and reader._call("isNode", late, block=at_hash) is False


def _as_tuples(value):
    """web3 gives a dynamic array inside several outputs as a list, the client eth_abi's tuple."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(item) for item in value)
    return value


def test_in_process_logs_are_web3s_read_block_by_block(ledger_chain, genesis_hash, open_round):
    """The in-process chain's `eth_getLogs` (`SerializedTesterProvider.logs`, read from py-evm's
    receipts: eth-tester's own is O(chain) per log) gives the events eth-tester gives, for every
    filter the ledger uses; with several transactions in one block a log's index is its position in
    the block, as on anvil or any node."""
    from ledger.chain.events import decode_logs, fetch_events
    from ledger.chain.rounds import round_topic

    w3, address = ledger_chain.w3, ledger_chain.address
    first, second = ledger_chain.nodes[:2]
    first.submit_update(1, h("u1"), 10)
    second.submit_update(1, h("u2"), 20)
    ledger_chain.admin.reject_update(1, second.account.address, 1)
    head = w3.eth.block_number
    u1 = "0x" + h("u1")
    cases = [
        dict(from_block=0, to_block="latest"),
        dict(from_block=0, to_block=head - 1),
        dict(from_block=0, to_block="latest", event_names=["UpdateSubmitted"], topic_filters=[round_topic(1)]),
        dict(from_block=0, to_block="latest", event_names=["UpdateSubmitted", "UpdateRejected"]),
        dict(from_block=0, to_block="latest", event_names=["UpdateSubmitted"], topic_filters=[None, None, [u1, "0x" + h("x")]]),
        dict(from_block=0, to_block="latest", event_names=["UpdateSubmitted"], topic_filters=[round_topic(2)]),
    ]
    for case in cases:
        ours = fetch_events(w3, address, case["from_block"], case["to_block"], event_names=case.get("event_names"), topic_filters=case.get("topic_filters"))
        topics = [None if case.get("event_names") is None else [events.topic_by_name()[n] for n in case["event_names"]], *case.get("topic_filters", [])]
        while topics and topics[-1] is None:
            topics.pop()
        params = {"address": address, "fromBlock": case["from_block"], "toBlock": case["to_block"], **({"topics": topics} if topics else {})}
        assert ours == list(decode_logs(w3, w3.eth.get_logs(params))), case
    assert [type(e).__name__ for e in fetch_events(w3, address, 0, "latest", event_names=["UpdateSubmitted"], topic_filters=[None, None, [u1]])] == ["UpdateSubmitted"]
    assert fetch_events(w3, address, head, head + 50) == fetch_events(w3, address, head, "latest") != []  # past the head: up to it

    tester = w3.provider.ethereum_tester
    third, fourth = ledger_chain.nodes[2:4]
    tester.disable_auto_mine_transactions()
    try:
        sent = [node.prepare("submitUpdate", 1, bytes.fromhex(h(label)), 30) for node, label in ((third, "u3"), (fourth, "u4"))]
        for tx in sent:
            w3.eth.send_raw_transaction(tx.raw)
        tester.mine_blocks(1)
        mined = w3.eth.block_number
    finally:
        tester.enable_auto_mine_transactions()
    # a transaction's own events (its receipt) carry the same references as the block's read
    receipts = [third._result("submitUpdate", tx.tx_hash[2:], w3.eth.get_transaction_receipt(tx.tx_hash)) for tx in sent]
    assert [event for result in receipts for event in result.events] == fetch_events(w3, address, mined, mined)
    both = fetch_events(w3, address, mined, mined)
    assert [(type(e).__name__, e.node) for e in both] == [("UpdateSubmitted", third.account.address), ("UpdateSubmitted", fourth.account.address)]
    assert [e.ref.log_index for e in both] == [0, 1]
    assert len({e.ref.tx_hash for e in both}) == 2
