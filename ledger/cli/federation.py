"""A whole federation in this process: the in-process chain, the aggregator and N edge nodes of one task.

Used by `fedledger demo --chain memory` and `fedledger bench tasks`. Like the demo, this module is a
composition root: it imports both `aggregator` and `edge_node`, which never import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aggregator.coordinator import Aggregator, AggregatorConfig, RoundResult
from aggregator.misbehaviour import LyingAggregator
from edge_node.node import EdgeNode, Outcome, TrainingConfig
from ledger.chain.inprocess import InProcessLedger, start_in_process_ledger
from ledger.core.task import Task
from ledger.store.base import BlobStore
from ledger.tasks.partition import split_examples


@dataclass
class InProcessFederation:
    chain: InProcessLedger
    store: BlobStore
    aggregator: Aggregator
    nodes: list[EdgeNode]
    outcomes: list[Outcome] = field(default_factory=list)  # each node's, in the last round
    # How many nodes train at once (threads, one torch thread each); the chain takes their
    # requests one at a time (`ledger.chain.tester.SerializedTesterProvider`).
    parallel: int = 1

    def run_round(self) -> RoundResult:
        """Open a round, let every node take part, close it.

        Every node has answered before the close, so if the round cannot close early (no node
        submitted: each has spent its ε budget), the in-process chain's clock moves to the deadline
        and the round is abandoned as it would be on a live chain.
        """
        info = self.aggregator.open_round()
        with ThreadPoolExecutor(max_workers=max(1, self.parallel), thread_name_prefix="node") as pool:
            self.outcomes = [p.outcome for p in pool.map(lambda node: node.participate(info.round), self.nodes)]
        return self.aggregator.close_round(info.round)


def start_federation(
    task: Task,
    store: BlobStore,
    *,
    nodes: int,
    max_model_bytes: int,
    hyperparameters: Mapping[str, Any] | None = None,
    iid: bool = True,
    alpha: float = 0.5,
    node_hooks: Mapping[int, Mapping[str, Any]] | None = None,
    parallel: int = 1,
    attestation_quorum: int = 0,
    misbehaviour: str | None = None,
    **aggregator_config: Any,
) -> InProcessFederation:
    """A fresh chain with `nodes` registered nodes, each holding a share of the task's bundled data; genesis committed.

    `node_hooks[k]` are extra `EdgeNode` keyword arguments for node k (the demo's misbehaving nodes);
    `misbehaviour` makes the aggregator lie that way (`aggregator.misbehaviour.MODES`);
    `aggregator_config` are `AggregatorConfig` fields (rule, min_updates, ...).
    """
    overrides = dict(hyperparameters or {})
    chain = start_in_process_ledger(nodes, attestation_quorum=attestation_quorum)
    data = task.bundled_data()
    shares = split_examples(data.train, nodes, iid=iid, alpha=alpha, seed=0)
    edge_nodes = [
        EdgeNode(
            client,
            store,
            share,
            TrainingConfig(task=task, hyperparameters=overrides, seed=index),
            max_model_bytes=max_model_bytes,
            **dict((node_hooks or {}).get(index, {})),
        )
        for index, (client, share) in enumerate(zip(chain.nodes, shares))
    ]
    config = AggregatorConfig(task=task, hyperparameters=overrides, **aggregator_config)
    if misbehaviour is None:
        aggregator = Aggregator(chain.admin, store, data.test, config)
    else:
        aggregator = LyingAggregator(chain.admin, store, data.test, config, mode=misbehaviour)
    aggregator.ensure_genesis()
    return InProcessFederation(chain, store, aggregator, edge_nodes, parallel=parallel)
