"""Encoded and private federations on the in-process chain, re-derived by the auditor.

Each encoding and DP go through the real aggregator and real edge nodes; a node sending the wrong
encoding, one making a false privacy claim and one over its ε budget are each rejected on chain
with their reason while the round still commits, and `verify` re-derives every version.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from federation import MAX_BYTES, PRIVACY, PrivateHistory, shared_private_history, submit_crafted

from aggregator.coordinator import Aggregator, AggregatorConfig, PolicyConflict
from edge_node.node import EdgeNode, Outcome, TrainingConfig, UnsupportedPolicy
from ledger.audit.facts import read_chain_facts
from ledger.audit.rederive import rederive, verify_version
from ledger.audit.verdict import FindingKind
from ledger.chain.inprocess import InProcessLedger, start_in_process_ledger
from ledger.chain.rounds import round_submissions
from ledger.core.metadata import decode, encode_genesis
from ledger.core.model import state_tensors
from ledger.core.serialization import serialize_tensors
from ledger.core.policy import FederationPolicy, PrivacyPolicy
from ledger.core.reasons import RejectReason
from ledger.core.safe_json import canonical_json
from ledger.core.task import Examples
from ledger.privacy.history import PrivacyBook
from ledger.store.local import LocalBlobStore
from ledger.tasks.digits import DIGITS_MLP
from ledger.tasks.partition import split_examples
from ledger.tasks.spec import task_spec

NODES = 5
HYPER = {"epochs": 1}


@pytest.fixture(scope="module")
def split():
    torch.set_num_threads(1)  # the model is tiny: a second thread only adds overhead on 2 cores
    return DIGITS_MLP.bundled_data()


def _federation(root: Path, split, **config) -> tuple[InProcessLedger, LocalBlobStore, Aggregator, list[Examples]]:
    chain = start_in_process_ledger(NODES)
    store = LocalBlobStore(root, max_bytes=MAX_BYTES)
    aggregator = Aggregator(chain.admin, store, split.test, AggregatorConfig(hyperparameters=HYPER, min_updates=3, **config))
    aggregator.ensure_genesis()
    return chain, store, aggregator, split_examples(split.train, NODES, iid=True, seed=0)


def _node(chain: InProcessLedger, store: LocalBlobStore, index: int, shard: Examples) -> EdgeNode:
    config = TrainingConfig(hyperparameters=HYPER, seed=index)
    return EdgeNode(chain.nodes[index], store, shard, config, max_model_bytes=MAX_BYTES)


def _all_verified(chain: InProcessLedger, store: LocalBlobStore, model_hashes: list[str]) -> None:
    for model_hash in model_hashes:
        verdict = verify_version(chain.admin, store, model_hash)
        assert verdict is not None and verdict.ok, verdict.to_json() if verdict else model_hash


@pytest.mark.parametrize(
    ("encoding", "wrong", "rule", "params"),
    [
        ("f16", "int8", "coordinate_median", {}),
        ("int8", "f32", "krum", {"num_byzantine": 0, "num_selected": 2}),
        ("int8", "f16", "trimmed_mean", {"trim_ratio": 0.25}),
    ],
)  # fedavg (streaming) runs on int8 in the private federation below
def test_an_encoded_federation_rejects_the_wrong_encoding_and_rederives(tmp_path, split, encoding, wrong, rule, params) -> None:
    chain, store, aggregator, shards = _federation(tmp_path, split, encoding=encoding, rule=rule, rule_params=params)
    nodes = [_node(chain, store, i, shard) for i, shard in enumerate(shards[:-1])]

    info = aggregator.open_round()
    sent = [node.participate(info.round) for node in nodes]
    stray = submit_crafted(chain, store, NODES - 1, info.round, info.base_model_hash, wrong, len(shards[-1]))
    result = aggregator.close_round(info.round)

    assert len(result.included) == NODES - 1
    assert [(s.update_hash, reason) for s, reason, _ in result.rejected] == [(stray, RejectReason.ENCODING_MISMATCH)]
    assert chain.admin.rejection_of(info.round, chain.nodes[-1].account.address) == RejectReason.ENCODING_MISMATCH
    model_bytes = len(store.get(result.model_hash))
    sizes = {len(store.get(p.update_hash)) for p in sent}
    assert max(sizes) <= model_bytes * (0.26 if encoding == "int8" else 0.52), (sizes, model_bytes)
    assert result.accuracy is not None and result.accuracy > 0.3  # one epoch from a random init (≈ 0.1)
    _all_verified(chain, store, [chain.admin.genesis_hash(), result.model_hash])


@pytest.fixture(scope="module")
def private(tmp_path_factory) -> PrivateHistory:
    return shared_private_history(tmp_path_factory)


def test_false_and_over_budget_claims_are_rejected_while_the_round_commits(private: PrivateHistory) -> None:
    one = private.results[0]
    address = private.addresses

    assert [p.epsilon for p in private.participations[0]] == ["0.701602"] * 3
    assert one.committed and len(one.included) == 3
    assert {(s.update_hash, r) for s, r, _ in one.rejected} == {
        (private.liar, RejectReason.PRIVACY_CLAIM_INVALID),
        (private.spender, RejectReason.PRIVACY_BUDGET_EXHAUSTED),
    }
    assert private.chain.admin.rejection_of(1, address[4]) == RejectReason.PRIVACY_BUDGET_EXHAUSTED
    record = decode(private.store.get(one.metadata_hash))
    assert record.privacy == {address[0]: "0.701602", address[1]: "0.701602", address[2]: "0.701602", address[4]: "1.289960"}


def test_a_rejected_update_still_counts_and_an_exhausted_node_stops_publishing(private: PrivateHistory) -> None:
    two, outcomes = private.results[1], private.participations[1]

    assert [o.epsilon for o in outcomes[:4]] == ["0.953006"] * 4  # node 3's rejected round-1 update counted
    assert outcomes[4].outcome is Outcome.BUDGET_EXHAUSTED and outcomes[4].epsilon == "1.886091"
    assert outcomes[4].update_hash is None
    assert len(two.included) == 4 and not two.rejected
    assert decode(private.store.get(two.metadata_hash)).privacy == {a: "0.953006" for a in private.addresses[:4]}


def test_the_aggregator_does_not_wait_for_a_node_that_has_spent_its_budget(private: PrivateHistory) -> None:
    chain, address = private.chain, private.addresses
    book = PrivacyBook(chain.admin, private.store, PRIVACY)

    assert book.spent(1, address) == [] and book.spent(2, address) == [address[4]]  # the node's own rule
    assert private.closed_at <= chain.admin.get_round(2).deadline  # closed on nodes 0–3, not at the deadline
    named = [line for line in private.progress if "spent their privacy budget" in line]
    assert named == [f"round 2: waiting for 4 nodes (1 has spent their privacy budget: {address[4]})"]


def test_every_private_version_rederives_and_a_misrecorded_epsilon_is_caught(private: PrivateHistory) -> None:
    chain, store = private.chain, private.store
    _all_verified(chain, store, private.model_hashes)

    two = private.results[1]
    metadata = json.loads(store.get(two.metadata_hash))
    metadata["privacy"][private.addresses[0]] = "0.500000"
    facts = read_chain_facts(chain.admin, two.model_hash)
    forged = store.put(canonical_json(metadata))  # an extra blob; the shared history's own are untouched
    lying = replace(facts, version=replace(facts.version, metadata_hash=forged))
    assert {f.kind for f in rederive(lying, store).findings} == {FindingKind.PRIVACY_MISMATCH}


def test_a_node_refuses_a_policy_its_software_cannot_follow(tmp_path) -> None:
    chain = start_in_process_ledger(1)
    store = LocalBlobStore(tmp_path, max_bytes=MAX_BYTES)
    genesis = store.put(serialize_tensors(state_tensors(DIGITS_MLP.build_model(0))))
    policy = FederationPolicy(rule="fedavg", encoding="int4")
    chain.admin.commit_genesis(genesis, store.put(encode_genesis(seed=0, policy=policy, task=task_spec(DIGITS_MLP))))
    chain.admin.open_round(1, genesis, chain.now() + 60, 1)
    node = EdgeNode(chain.nodes[0], store, Examples(torch.zeros(2, 64), torch.zeros(2, dtype=torch.int64)), max_model_bytes=MAX_BYTES)

    with pytest.raises(UnsupportedPolicy, match="update encoding 'int4'; this fedledger writes f32, f16, int8"):
        node.participate(1)
    assert round_submissions(chain.admin, 1) == []


def test_an_aggregator_restarted_with_another_policy_refuses_to_run(tmp_path, split) -> None:
    chain, store, aggregator, _ = _federation(tmp_path, split, encoding="int8")

    again = Aggregator(chain.admin, store, split.test, AggregatorConfig(hyperparameters=HYPER, min_updates=3, encoding="int8"))
    other = Aggregator(chain.admin, store, split.test, AggregatorConfig(hyperparameters=HYPER, min_updates=3, encoding="f16"))

    assert again.ensure_genesis() == chain.admin.genesis_hash()
    with pytest.raises(PolicyConflict, match="'encoding': 'int8'"):
        other.ensure_genesis()


def test_private_demo_in_memory_stops_when_every_budget_is_spent(tmp_path, monkeypatch, capsys) -> None:
    from ledger.cli.main import main

    monkeypatch.setenv("FEDLEDGER_HOME", str(tmp_path / "var"))
    argv = ["demo", "--chain", "memory", "--nodes", "3", "--rounds", "3", "--encoding", "int8"]
    argv += ["--dp-noise-multiplier", "3.205", "--dp-epsilon-budget", "0.6", "--dp-epochs", "1"]

    assert main(argv) == 0
    captured = capsys.readouterr()
    out = captured.out
    # 479 samples per node: q = 1/8, 8 steps; ε 0.530645 after one round, 0.725332 after two.
    assert re.findall(r"included, ε (\d\.\d{6})", out) == ["0.530645"] * 3
    assert "round 2: 0 included, 0 rejected" in out
    assert "every node has spent its ε budget (0.600000): stopping" in captured.err  # progress lines are on stderr
    assert "v1 " in out and "v2 " not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dp-noise-multiplier", "1.5"], "--dp-noise-multiplier needs --dp-epsilon-budget"),
        (["--dp-epsilon-budget", "3"], "--dp-epsilon-budget needs --dp-noise-multiplier"),
        (["--dp-noise-multiplier", "1.5", "--dp-epsilon-budget", "3", "--dp-delta", "2"], "privacy.delta"),
    ],
)
def test_incomplete_privacy_options_are_a_one_line_usage_error(argv, message, tmp_path, monkeypatch, capsys) -> None:
    from ledger.cli.main import main

    monkeypatch.setenv("FEDLEDGER_HOME", str(tmp_path / "var"))

    assert main(["demo", "--chain", "memory", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_the_readme_aggregator_command_pins_this_policy_and_the_demo_forwards_it() -> None:
    import shlex

    from ledger.cli.main import build_parser
    from ledger.cli.policy_options import policy_argv, privacy_policy

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    [command] = [block for block in readme.replace("\\\n", " ").splitlines() if "aggregator run" in block and "--dp-" in block]
    argv = shlex.split(command)[1:]  # drop .venv/bin/fedledger

    args = build_parser("aggregator").parse_args(argv)
    demo = build_parser("demo").parse_args(["demo", *argv[argv.index("--encoding"):]])
    forwarded = build_parser("aggregator").parse_args(["aggregator", "run", "--dev-key", "0", *policy_argv(demo)])

    expected = PrivacyPolicy(noise_multiplier=3.205, max_grad_norm=1.0, delta=1e-5, epsilon_budget="3.000000", batch_size=64, epochs=2)
    assert (args.encoding, privacy_policy(args)) == ("int8", expected)
    assert (forwarded.encoding, privacy_policy(forwarded)) == ("int8", expected)
