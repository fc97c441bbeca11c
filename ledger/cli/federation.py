"""A whole federation in this process: the in-process chain, the aggregator and N edge nodes of one task.

Used by `fedledger demo --chain memory` and `fedledger bench tasks`. Like the demo, this module is a
composition root: it imports both `aggregator` and `edge_node`, which never import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aggregator.coordinator import Aggregator, AggregatorConfig, RoundResult
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

    def run_round(self) -> RoundResult:
        """Open a round, let every node take part, close it.

        If no node will submit (each has spent its ε budget), chain time moves past the deadline,
        so the round is abandoned as it would be on a live chain.
        """
        info = self.aggregator.open_round()
        self.outcomes = [node.participate(info.round).outcome for node in self.nodes]
        if set(self.outcomes) == {Outcome.BUDGET_EXHAUSTED}:
            self.chain.advance_time(self.aggregator.config.round_seconds + 1)
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
    **aggregator_config: Any,
) -> InProcessFederation:
    """A fresh chain with `nodes` registered nodes, each holding a share of the task's bundled data; genesis committed.

    `node_hooks[k]` are extra `EdgeNode` keyword arguments for node k (the demo's misbehaving nodes);
    `aggregator_config` are `AggregatorConfig` fields (rule, min_updates, ...).
    """
    overrides = dict(hyperparameters or {})
    chain = start_in_process_ledger(nodes)
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
    aggregator = Aggregator(chain.admin, store, data.test, config)
    aggregator.ensure_genesis()
    return InProcessFederation(chain, store, aggregator, edge_nodes)
