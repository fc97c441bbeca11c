"""The ledger on a real anvil devnet: a full round, then kill -9 anvil, restart, read it all back."""

from __future__ import annotations

import hashlib

import pytest

from ledger.chain import errors, events
from ledger.chain.connect import connect
from ledger.chain.client import LedgerClient, RoundState
from ledger.chain.deploy import DeploymentNotFound, deploy, load_deployment
from ledger.chain.devkeys import dev_account
from ledger.core.merkle import merkle_root

pytestmark = pytest.mark.devnet


def h(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def test_round_survives_kill_minus_nine(anvil_devnet):
    w3 = connect(anvil_devnet.rpc_url)
    admin, record, _ = deploy(w3, dev_account(0))
    nodes = [admin.as_account(dev_account(i)) for i in (1, 2, 3)]
    for node in nodes:
        admin.register_node(node.account.address)
    admin.commit_genesis(h("genesis"), h("genesis-meta"))
    now = w3.eth.get_block("latest")["timestamp"]
    admin.open_round(1, h("genesis"), now + 600, 3)
    updates = [h(f"update-{i}") for i in range(3)]
    for node, update in zip(nodes, updates):
        node.submit_update(1, update, 50)
    with pytest.raises(errors.AlreadySubmitted) as caught:
        nodes[0].submit_update(1, h("again"), 50)
    assert caught.value.node == nodes[0].account.address
    root = merkle_root([bytes.fromhex(u) for u in updates])
    final = admin.finalize_round(1, h("model-1"), root, 3, h("meta-1"))
    before = admin.events()

    anvil_devnet.wait_persisted(final.block_number)
    anvil_devnet.kill_hard()
    assert not anvil_devnet.is_running()
    anvil_devnet.start()

    w3 = connect(anvil_devnet.rpc_url)
    assert load_deployment(w3) == record  # the code at the recorded address is still ours
    reader = LedgerClient(w3, record.address)
    assert w3.eth.block_number >= final.block_number
    assert reader.counters().version_count == 2
    assert reader.get_round(1).state is RoundState.FINALIZED
    assert reader.model_of(h("model-1")).included_count == 3
    assert [reader.submission_of(1, n.account.address) for n in nodes] == updates
    assert all(reader.is_node(n.account.address) for n in nodes)
    after = reader.events()
    assert after == before
    committed = [e for e in after if isinstance(e, events.ModelCommitted)]
    assert [(e.version, e.parent_hash) for e in committed] == [(0, None), (1, h("genesis"))]


def test_reset_devnet_makes_the_deployment_record_stale(anvil_devnet):
    w3 = connect(anvil_devnet.rpc_url)
    deploy(w3, dev_account(0))
    anvil_devnet.reset()
    with pytest.raises(DeploymentNotFound, match="deploy` again"):
        load_deployment(connect(anvil_devnet.rpc_url))


def test_dev_keys_refused_off_the_devnet(tmp_path):
    """anvil posing as chain id 1: the public dev keys are refused before any transaction."""
    import subprocess

    from ledger.core.polling import free_port
    from ledger.chain.devnet import anvil_binary

    port = free_port()
    process = subprocess.Popen(
        [str(anvil_binary()), "--port", str(port), "--chain-id", "1", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        w3 = connect(f"http://127.0.0.1:{port}", timeout=20)
        assert w3.eth.chain_id == 1
        with pytest.raises(errors.DevKeyRefused, match="public dev keys"):
            LedgerClient.deploy(w3, dev_account(0))
        assert w3.eth.get_transaction_count(dev_account(0).address) == 0
    finally:
        process.kill()
        process.wait(timeout=10)


def test_walkthrough_never_prints_a_private_key(anvil_devnet, capsys, caplog):
    from ledger.cli.main import main

    caplog.set_level("DEBUG")
    assert main(["-v", "walkthrough", "--rpc-url", anvil_devnet.rpc_url, "--nodes", "2"]) == 0
    printed = capsys.readouterr()
    text = printed.out + printed.err + caplog.text
    assert "finalizeRound" in text
    for index in range(3):
        key = dev_account(index).key.hex().removeprefix("0x")
        assert key not in text.lower()


def _as_tuples(value):
    """web3 gives several outputs and dynamic arrays as lists in some 8.x releases and tuples in
    others; the client gives tuples (eth_abi's own), so compare sequences by their items."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(item) for item in value)
    return value


def test_json_rpc_calls_answer_as_web3_did_and_reverts_keep_their_types(anvil_devnet):
    """Over JSON-RPC the client encodes calls from the ABI (`ledger.chain.calldata`) instead of going
    through web3's contract layer: every view function answers what web3 answers, value and type,
    at "latest" and at a block hash, and a revert is its typed error from `eth_call` and from the
    batch that prepares a transaction."""
    w3 = connect(anvil_devnet.rpc_url)
    admin, _ = LedgerClient.deploy(w3, dev_account(0))
    node = dev_account(1).address
    admin.register_node(node)
    admin.commit_genesis("11" * 32, "22" * 32)
    digest = bytes.fromhex("11" * 32)
    views = [
        ("admin", ()), ("pendingAdmin", ()), ("attestationQuorum", ()), ("MAX_AUDITORS", ()), ("counters", ()),
        ("genesisHash", ()), ("getRound", (1,)), ("isNode", (node,)), ("isAggregator", (node,)), ("isAuditor", (node,)),
        ("attestationCounts", (digest,)), ("attestationOf", (digest, node)), ("hashSubmission", (1, digest, 5)),
        ("modelOf", (digest,)), ("rejectionOf", (1, node)), ("submissionOf", (1, node)), ("verifyInclusion", (digest, digest, [])),
        ("eip712Domain", ()),
    ]  # fmt: skip
    at = w3.eth.get_block("latest")["hash"].to_0x_hex()
    for name, args in views:
        for block in ("latest", at):
            ours = admin._call(name, *args, block=block)
            web3s = getattr(admin.contract.functions, name)(*args).call(block_identifier=block)
            assert ours == _as_tuples(web3s), (name, block)

    stranger = LedgerClient(w3, admin.address, dev_account(7))
    with pytest.raises(errors.NotAdmin):
        stranger._call("registerNode", node)
    with pytest.raises(errors.NotAdmin):
        stranger.prepare("registerNode", node)
