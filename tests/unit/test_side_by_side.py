"""When the in-process federation trains its nodes on threads (`ledger.cli.federation.side_by_side`)."""

from __future__ import annotations

from edge_node.node import Outcome, Participation
from ledger.cli.federation import side_by_side


def took(train: float, seconds: float) -> tuple[Participation, float]:
    return Participation(1, Outcome.SUBMITTED, "ab" * 32, 10, train_seconds=train), seconds


def test_threads_when_training_was_most_of_the_nodes_time() -> None:
    assert side_by_side([took(0.10, 0.14), took(0.11, 0.15)]) is True


def test_turns_when_the_ledger_work_was() -> None:
    # digits-mlp on this machine: ~0.016 s of training in ~0.044 s per node
    assert side_by_side([took(0.016, 0.044)] * 5) is False
    assert side_by_side([took(0.5, 1.0)]) is False  # exactly half is not most


def test_undecided_when_no_node_trained() -> None:
    closed = (Participation(1, Outcome.ROUND_CLOSED), 0.01)
    assert side_by_side([closed, closed]) is None
    assert side_by_side([]) is None
