"""A real federation for audit tests: genesis plus honest rounds on the in-process chain, and lying rounds.

Five edge nodes train on digits shards and the real aggregator verifies, merges and commits, all
in one process with a `LocalBlobStore` (about a second per round). One node poisons its
update in the chosen round, so that round records an on-chain rejection. `commit_lying_round`
plays an aggregator whose metadata misstates what it did, committed on chain like an honest one.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from aggregator.coordinator import Aggregator, AggregatorConfig, RoundResult
from edge_node.node import EdgeNode, Participation, TrainingConfig
from ledger.core.aggregation import Update, aggregate
from ledger.core.encoding import encode_update
from ledger.core.merkle import merkle_root
from ledger.core.metadata import IncludedUpdate, encode_round
from ledger.core.model import load_state
from ledger.core.policy import PrivacyPolicy
from ledger.core.task import Examples
from ledger.privacy.judge import next_claim
from ledger.chain.rounds import round_submissions
from ledger.core.serialization import deserialize_tensors, serialize_tensors
from ledger.store.local import LocalBlobStore
from ledger.store.mirror import MirroredStore
from ledger.audit.watch import Attested, WatchConfig, Watcher
from ledger.chain.inprocess import InProcessLedger, start_in_process_ledger
from ledger.tasks.digits import DIGITS_MLP
from ledger.tasks.partition import split_examples

MAX_BYTES = 16 * 1024 * 1024
NODE_COUNT = 5
POISON_SCALE = 1000.0  # moves the update far past the aggregator's norm bound: rejected, reason 8


@dataclass
class Federation:
    chain: InProcessLedger
    store: LocalBlobStore
    aggregator: Aggregator
    nodes: list[EdgeNode]
    genesis_hash: str
    results: list[RoundResult] = field(default_factory=list)

    @property
    def blobs_dir(self) -> Path:
        return self.store.root

    @property
    def model_hashes(self) -> list[str]:
        """Genesis, then every committed round's model, in lineage order."""
        return [self.genesis_hash] + [r.model_hash for r in self.results if r.model_hash is not None]

    def store_copy(self, destination: Path) -> LocalBlobStore:
        """A private copy of the blobs, for tests that damage them."""
        shutil.copytree(self.store.root, destination)
        return LocalBlobStore(destination, max_bytes=MAX_BYTES)

    def train_round(self) -> int:
        """Open a round and have every node submit; returns the round number (left open)."""
        info = self.aggregator.open_round()
        for node in self.nodes:
            node.participate(info.round)
        return info.round


def _poison(weights):
    return {name: tensor * POISON_SCALE for name, tensor in weights.items()}


def run_federation(root: Path, *, rounds: int, poisoned_round: int | None = None) -> Federation:
    """Genesis and `rounds` honest rounds; in `poisoned_round` the last node's update is rejected."""
    torch.set_num_threads(1)  # the model is tiny: a second thread only adds overhead on 2 cores
    chain = start_in_process_ledger(NODE_COUNT)
    store = LocalBlobStore(root, max_bytes=MAX_BYTES)
    split = DIGITS_MLP.bundled_data()
    shards = split_examples(split.train, NODE_COUNT, iid=True, seed=0)
    hyper = {"epochs": 1}
    aggregator = Aggregator(chain.admin, store, split.test, AggregatorConfig(hyperparameters=hyper, min_updates=NODE_COUNT - 1))
    config = [TrainingConfig(hyperparameters=hyper, seed=i) for i in range(NODE_COUNT)]
    nodes = [
        EdgeNode(client, store, shard, config[i], max_model_bytes=MAX_BYTES)
        for i, (client, shard) in enumerate(zip(chain.nodes, shards))
    ]
    poisoner = EdgeNode(chain.nodes[-1], store, shards[-1], config[-1], max_model_bytes=MAX_BYTES, transform=_poison)
    federation = Federation(chain, store, aggregator, nodes, genesis_hash=aggregator.ensure_genesis())
    for _ in range(rounds):
        info = aggregator.open_round()
        for node in nodes[:-1] + [poisoner if info.round == poisoned_round else nodes[-1]]:
            node.participate(info.round)
        federation.results.append(aggregator.close_round(info.round))
    return federation


def _accuracy(federation: Federation, weights) -> float:
    model = DIGITS_MLP.build_model(federation.aggregator.config.model_seed)
    load_state(model, weights)
    return DIGITS_MLP.evaluate(model, federation.aggregator.test_split)["accuracy"]


def commit_lying_round(federation: Federation, *, lie: str) -> str:
    """Train a round honestly, merge it with the pinned rule, and commit metadata that lies; returns the model hash.

    lie="rule": the metadata says coordinate_median. lie="update": it names an update from an
    earlier round instead of one really merged (the on-chain root is over the real ones).
    lie="samples": it inflates one node's sample count.
    """
    chain, store = federation.chain, federation.store
    round_number = federation.train_round()
    submissions = sorted(round_submissions(chain.admin, round_number), key=lambda s: s.update_hash)
    updates = [
        Update(s.update_hash, s.num_samples, deserialize_tensors(store.get(s.update_hash), max_bytes=MAX_BYTES))
        for s in submissions
    ]
    policy = federation.aggregator.config.policy
    rule, params = policy.rule, policy.rule_call_params()
    base = chain.admin.get_round(round_number).base_model_hash
    assert base is not None
    weights = aggregate(rule, updates, base=deserialize_tensors(store.get(base), max_bytes=MAX_BYTES), **params)
    model_hash = store.put(serialize_tensors(weights))
    claimed = [IncludedUpdate(s.update_hash, s.node, s.num_samples) for s in submissions]
    if lie == "rule":
        rule, params = "coordinate_median", {}
    elif lie == "update":
        earlier = federation.results[0].included[0]
        claimed[0] = IncludedUpdate(earlier.update_hash, claimed[0].node, claimed[0].num_samples)
    elif lie == "samples":
        claimed[0] = IncludedUpdate(claimed[0].update_hash, claimed[0].node, claimed[0].num_samples * 10)
    else:
        raise ValueError(f"unknown lie {lie!r}")
    metadata = encode_round(
        round_number=round_number,
        base_model_hash=base,
        task_spec=federation.aggregator.spec.spec_hash,
        rule=rule,
        rule_params=params,
        included=claimed,
        rejected=[],
        metrics={
            "test_accuracy": round(_accuracy(federation, weights), 6),
            "test_samples": len(federation.aggregator.test_split),
        },
    )
    metadata_hash = store.put(metadata)
    root = merkle_root(bytes.fromhex(s.update_hash) for s in submissions)
    chain.admin.finalize_round(round_number, model_hash, root, len(submissions), metadata_hash)
    return model_hash


@dataclass
class History:
    """Genesis, three honest rounds (round 2 rejects a poisoned update), then three lying rounds,
    every version attested by one auditor (ok for the honest ones, failed for the lies)."""

    federation: Federation
    honest: list[str]  # model hashes of versions 0-3, lineage order
    lies: dict[str, str]  # lie → model hash (versions 4-6)
    auditor: str = ""
    attested: list[Attested] = field(default_factory=list)


_SHARED: list[History] = []


def shared_history(tmp_path_factory) -> History:
    """One history per test session (about 10 s to build), shared by the audit tests; never damage it."""
    if not _SHARED:
        federation = run_federation(tmp_path_factory.mktemp("blobs"), rounds=3, poisoned_round=2)
        honest = federation.model_hashes
        lies = {lie: commit_lying_round(federation, lie=lie) for lie in ("rule", "update", "samples")}
        auditor = federation.chain.new_account("auditor")
        federation.chain.admin.set_auditor(auditor.address, True)
        own = LocalBlobStore(tmp_path_factory.mktemp("auditor"), max_bytes=MAX_BYTES)
        watcher = Watcher(
            federation.chain.client(auditor),
            MirroredStore(own, federation.store),
            publish=federation.store,  # where the API finds the reports
            config=WatchConfig(max_bytes=MAX_BYTES),
        )
        _SHARED.append(History(federation, honest, lies, auditor.address, watcher.run_once()))
    return _SHARED[0]


# --------------------------------------------------------------------------- a private federation

# ε after one round is 0.701602 at n = 288 (q = 0.2, 5 steps) and 1.289960 at n = 30 (q = 1, 1 step).
PRIVACY = PrivacyPolicy(noise_multiplier=3.205, max_grad_norm=1.0, delta=1e-5, epsilon_budget="1.000000", epochs=1)


@dataclass
class PrivateHistory:
    """Two rounds of an int8, DP federation: in round 1 node 3 understates its ε and node 4 (30
    samples, so q = 1) exceeds the budget; in round 2 nodes 0–3 are honest and node 4 stops."""

    chain: InProcessLedger
    store: LocalBlobStore
    addresses: list[str]
    results: list[RoundResult]
    participations: list[list[Participation]]  # per round, nodes 0.. that went through EdgeNode
    liar: str  # node 3's round-1 update hash
    spender: str  # node 4's round-1 update hash
    closed_at: int = 0  # chain time of round 2's finalize
    progress: list[str] = field(default_factory=list)  # the aggregator's progress lines while closing round 2

    @property
    def model_hashes(self) -> list[str]:
        return [self.chain.admin.genesis_hash()] + [r.model_hash for r in self.results if r.model_hash]


def submit_crafted(chain, store, index, round_number, base_hash, encoding, num_samples, privacy=None) -> str:
    """A node's update made by hand: the base nudged, encoded as told, stored and submitted."""
    base = deserialize_tensors(store.get(base_hash), max_bytes=MAX_BYTES)
    generator = torch.Generator().manual_seed(index)
    weights = {name: t + 0.01 * torch.randn(t.shape, generator=generator) for name, t in base.items()}
    update_hash = store.put(encode_update(weights, base, encoding, privacy=privacy))
    chain.nodes[index].submit_update(round_number, update_hash, num_samples)
    return update_hash


def run_private_federation(root: Path) -> PrivateHistory:
    torch.set_num_threads(1)
    chain = start_in_process_ledger(NODE_COUNT)
    store = LocalBlobStore(root, max_bytes=MAX_BYTES)
    split = DIGITS_MLP.bundled_data()
    shards = split_examples(split.train, NODE_COUNT, iid=True, seed=0)
    hyper = {"epochs": 1}
    config = AggregatorConfig(hyperparameters=hyper, min_updates=3, encoding="int8", privacy=PRIVACY)
    aggregator = Aggregator(chain.admin, store, split.test, config)
    aggregator.ensure_genesis()
    small = Examples(shards[4].x[:30], shards[4].y[:30])
    nodes = [
        EdgeNode(client, store, shard, TrainingConfig(hyperparameters=hyper, seed=i), max_model_bytes=MAX_BYTES)
        for i, (client, shard) in enumerate(zip(chain.nodes, shards[:4] + [small]))
    ]
    first = aggregator.open_round()
    honest = [nodes[i].participate(first.round) for i in range(3)]
    claim = next_claim(PRIVACY, num_samples=len(shards[3]), earlier=[]).to_json()
    liar = submit_crafted(
        chain, store, 3, first.round, first.base_model_hash, "int8", len(shards[3]), {**claim, "epsilon": "0.100000"}
    )
    over = next_claim(PRIVACY, num_samples=len(small), earlier=[]).to_json()
    spender = submit_crafted(chain, store, 4, first.round, first.base_model_hash, "int8", len(small), over)
    one = aggregator.close_round(first.round)
    second = aggregator.open_round()
    everyone = [node.participate(second.round) for node in nodes]
    lines: list[str] = []
    handler, logger = _Lines(lines), logging.getLogger("aggregator.coordinator")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:  # node 4 has spent its budget: the round closes on nodes 0–3 without waiting for the deadline
        two = aggregator.close_round(second.round)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return PrivateHistory(
        chain, store, [c.account.address for c in chain.nodes], [one, two], [honest, everyone], liar, spender,
        closed_at=chain.now(), progress=lines,
    )


class _Lines(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


_SHARED_PRIVATE: list[PrivateHistory] = []


def shared_private_history(tmp_path_factory) -> PrivateHistory:
    """One private history per test session, shared by the privacy and audit page tests; never damage it."""
    if not _SHARED_PRIVATE:
        _SHARED_PRIVATE.append(run_private_federation(tmp_path_factory.mktemp("private-blobs")))
    return _SHARED_PRIVATE[0]
