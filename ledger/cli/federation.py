"""A whole federation in this process: the in-process chain, the aggregator and N edge nodes of one task.

Used by `fedledger demo --chain memory` and `fedledger bench tasks`. Like the demo, this module is a
composition root: it imports both `aggregator` and `edge_node`, which never import each other.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aggregator.coordinator import Aggregator, AggregatorConfig, RoundResult
from aggregator.misbehaviour import LyingAggregator
from edge_node.node import EdgeNode, Outcome, Participation, TrainingConfig
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
    # How many nodes may train at once (threads, one torch thread each); the chain takes their
    # requests one at a time (`ledger.chain.tester.SerializedTesterProvider`).
    parallel: int = 1
    # Whether they do, decided by the first round in which a node trained, in turns (`side_by_side`).
    side_by_side: bool | None = None

    def run_round(self) -> RoundResult:
        """Open a round, let every node take part, close it.

        Every node has answered before the close, so if the round cannot close early (no node
        submitted: each has spent its ε budget), the in-process chain's clock moves to the deadline
        and the round is abandoned as it would be on a live chain.
        """
        info = self.aggregator.open_round()

        def take_part(node: EdgeNode) -> tuple[Participation, float]:
            started = time.perf_counter()
            return node.participate(info.round), time.perf_counter() - started

        workers = max(1, self.parallel) if self.side_by_side else 1
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="node") as pool:
            taken = list(pool.map(take_part, self.nodes))
        self.outcomes = [p.outcome for p, _ in taken]
        if self.side_by_side is None and workers == 1:
            self.side_by_side = side_by_side(taken)
        return self.aggregator.close_round(info.round)


def side_by_side(taken: Sequence[tuple[Participation, float]]) -> bool | None:
    """Whether nodes should train at once, from a round where they took turns (each node's
    participation and its seconds): when training was most of their time. None if nobody trained.

    Only training runs outside the GIL; the rest is Python taking turns on one chain, slower on
    threads than one after another. digits-mlp, 5 nodes (training ~40% of a node's time): 0.26 s a
    round in turns against 0.31 s on two threads; digits-cnn: 0.72 s against 0.53 s.
    """
    training = sum(participation.train_seconds for participation, _ in taken)
    if training == 0:
        return None
    return training > 0.5 * sum(seconds for _, seconds in taken)


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
