"""`fedledger bench robustness`: final accuracy of every rule under hostile nodes (1 and 2 of 5).

Five nodes train a task (`--task`, default digits-mlp) on shares of its bundled data (IID, or
Dirichlet α = 0.5 label skew) with the task's default hyperparameters (digits: 5 local epochs,
batch 32, lr 0.05) for 5 rounds from the genesis model. The attackers are the last nodes (4, then
3), submitting after the honest ones, and play `edge_node.misbehaviour`'s attacks with the
federation's norm bound (100). Each round goes through the aggregator's own intake
(`aggregator.intake.admit_and_merge`: fetch from a real blob folder, re-hash, validate against the
base's trainable tensors, reject copies and free-riders, merge with the rule and the parameters
the policy pins); frozen tensors are copied from the base, and a round whose aggregate is already
committed keeps its base, as on chain. No chain: the contract adds nothing to the arithmetic, and
300 five-round runs fit in minutes this way.

The floor: every attack at 1 and 2 of 5, IID and non-IID, final accuracy ≥ 0.90 — set and measured
for digits-mlp; other tasks' figures are reported against the same number, not promised.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.cli.bench.common import add_output_arguments, emit

FLOOR = 0.90
DEFAULT_TASK = "digits-mlp"
NODES = 5
ROUNDS = 5
ALPHA = 0.5
MAX_NORM = 100.0
ATTACKER_ORDER = (4, 3)  # attackers are the last nodes: they submit after the honest ones
RULE_PARAMS: dict[str, dict[str, Any]] = {
    "fedavg": {},
    "coordinate_median": {},
    "trimmed_mean": {"trim_ratio": 0.2},
    "krum": {"num_byzantine": 1},
    "arc_nnm_trimmed_mean": {},
}


def add_bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edge_node.misbehaviour import ATTACKS

    parser = subparsers.add_parser("robustness", help="final accuracy of each rule under 1 and 2 hostile nodes of 5")
    parser.add_argument("--task", default=DEFAULT_TASK, help=f"a task with bundled data (default {DEFAULT_TASK}, which the floor is for)")
    parser.add_argument("--rules", nargs="+", default=list(RULE_PARAMS), choices=list(RULE_PARAMS), metavar="RULE")
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=list(ATTACKS), metavar="ATTACK")
    parser.add_argument("--splits", nargs="+", default=["iid", "noniid"], choices=["iid", "noniid"])
    parser.add_argument("--attackers", nargs="+", type=int, default=[1, 2], choices=[1, 2])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown (for the README)")
    add_output_arguments(parser)
    parser.set_defaults(handler=_run)


@dataclass(frozen=True)
class Cell:
    rule: str
    split: str
    attack: str
    attackers: int


class World:
    """The task, its data, the genesis model and a cache of honest training (the same inputs train once)."""

    def __init__(self, task_name: str = DEFAULT_TASK) -> None:
        import torch

        from ledger.core.model import state_tensors
        from ledger.tasks.partition import split_examples
        from ledger.tasks.registry import load_task
        from ledger.tasks.spec import task_spec

        torch.set_num_threads(1)  # small models: one thread is faster, and the same bits every time
        self.task = load_task(task_name)
        self.spec = task_spec(self.task)
        self.data = self.task.bundled_data()
        self.shards = {
            split: split_examples(self.data.train, NODES, iid=split == "iid", alpha=ALPHA, seed=0)
            for split in ("iid", "noniid")
        }
        self.genesis = state_tensors(self.task.build_model(0))
        self._trained: dict[tuple[Any, ...], Any] = {}

    def train(self, base: Mapping[str, Any], base_hash: str, shard: Any, key: tuple[Any, ...], epochs: int | None, seed: int) -> Any:
        """The trainable tensors after local training from the full model `base` (cached by key)."""
        from edge_node.misbehaviour import with_epochs
        from edge_node.training import train_local

        cache_key = (base_hash, *key, epochs)
        if cache_key not in self._trained:
            self._trained[cache_key] = train_local(self.task, with_epochs(self.spec, epochs), base, shard, seed=seed)
        return self._trained[cache_key]

    def accuracy(self, weights: Mapping[str, Any]) -> float:
        from ledger.core.model import load_state
        from ledger.core.task import checked_metrics

        model = self.task.build_model(0)
        load_state(model, weights)
        return checked_metrics(self.task, self.task.evaluate(model, self.data.test))["accuracy"]


def run_cell(world: World, cell: Cell, rounds: int, store_root: Path) -> dict[str, Any]:
    """One federation of `rounds` rounds; its final accuracy and how many rounds committed nothing."""
    from aggregator.coordinator import AggregatorConfig
    from aggregator.intake import Limits, admit_and_merge
    from edge_node.misbehaviour import RoundView, attack_named
    from ledger.chain.events import LogRef, UpdateSubmitted
    from ledger.core.hashing import sha256_hex
    from ledger.core.manifest import trainable_part, with_frozen
    from ledger.core.serialization import serialize_tensors
    from ledger.store.local import LocalBlobStore

    policy = AggregatorConfig(task=world.task, rule=cell.rule, rule_params=RULE_PARAMS[cell.rule], max_norm=MAX_NORM).policy
    params = policy.rule_call_params()
    limits = Limits(max_update_bytes=policy.max_update_bytes, max_norm=policy.max_norm)
    store = LocalBlobStore(store_root, max_bytes=policy.max_update_bytes)
    shards = world.shards[cell.split]
    attackers = {index: attack_named(cell.attack, max_norm=MAX_NORM) for index in ATTACKER_ORDER[: cell.attackers]}
    base = dict(world.genesis)
    base_hash = store.put(serialize_tensors(base))
    committed = {base_hash}
    idle_rounds = 0
    for round_number in range(1, rounds + 1):
        travelling = trainable_part(base, world.spec)  # what updates carry, and are checked and merged against
        submitted: list[tuple[str, int]] = []
        events: list[UpdateSubmitted] = []
        for index in [i for i in range(NODES) if i not in attackers] + list(attackers):
            shard = shards[index]

            def train(data: Any, epochs: int | None, index: int = index, shard: Any = shard) -> Any:
                key = (cell.split, index, round_number, data is shard)
                return world.train(base, base_hash, data, key, epochs, seed=index * 1_000_003 + round_number)

            if index in attackers:
                view = RoundView(round_number, base_hash, travelling, shard, train, lambda: list(submitted))
                contribution = attackers[index](view)
                weights, update_hash, samples = contribution.weights, contribution.update_hash, contribution.num_samples
            else:
                weights, update_hash, samples = train(shard, None), None, len(shard)
            if weights is not None:
                update_hash = store.put(serialize_tensors(weights))
            assert update_hash is not None
            submitted.append((update_hash, samples))
            ref = LogRef(block_number=round_number, block_hash="", tx_hash="", log_index=len(events))
            events.append(UpdateSubmitted(ref=ref, round=round_number, node=f"node-{index}", update_hash=update_hash, num_samples=samples))
        intake = admit_and_merge(store, events, travelling, limits, rule=cell.rule, rule_params=params, workers=1)
        try:
            merged = with_frozen(intake.weights(), base, world.spec) if intake.accepted else None
        except ValueError:  # the rule cannot run on what is left (e.g. Krum with n < 2f + 3)
            merged = None
        merged_hash = sha256_hex(serialize_tensors(merged)) if merged is not None else None
        if merged is None or merged_hash in committed:
            idle_rounds += 1  # abandoned on chain: the next round starts from the same base
            continue
        assert merged_hash is not None
        base, base_hash = merged, store.put(serialize_tensors(merged))
        committed.add(base_hash)
    return {
        "rule": cell.rule,
        "split": cell.split,
        "attack": cell.attack,
        "attackers": cell.attackers,
        "accuracy": round(world.accuracy(base), 4),
        "rounds_without_model": idle_rounds,
    }


def measure(
    rules: Sequence[str],
    attacks: Sequence[str],
    splits: Sequence[str],
    attackers: Sequence[int],
    rounds: int,
    *,
    task: str = DEFAULT_TASK,
) -> dict[str, Any]:
    from ledger.core.policy import DEFAULT_RULE

    started = time.perf_counter()
    world = World(task)
    cells = [Cell(rule, split, "none", 0) for rule in rules for split in splits]
    cells += [Cell(rule, split, attack, k) for rule in rules for split in splits for attack in attacks for k in attackers]
    results = []
    with tempfile.TemporaryDirectory(prefix="fedledger-robustness-") as scratch:
        for number, cell in enumerate(cells):
            results.append(run_cell(world, cell, rounds, Path(scratch) / str(number)))
    worst = {
        rule: min(r["accuracy"] for r in results if r["rule"] == rule and r["attackers"] > 0)
        for rule in rules
        if any(r["rule"] == rule and r["attackers"] > 0 for r in results)
    }
    return {
        "benchmark": "robustness",
        "task": world.task.name,
        "trainable_tensors": list(world.spec.trainable_names),
        "nodes": NODES,
        "rounds": rounds,
        "alpha": ALPHA,
        "max_norm": MAX_NORM,
        "floor": FLOOR,
        "default_rule": DEFAULT_RULE,
        "results": results,
        "worst_accuracy": worst,
        "meets_floor": {rule: accuracy >= FLOOR for rule, accuracy in worst.items()},
        "default_meets_floor": worst.get(DEFAULT_RULE, 0.0) >= FLOOR if DEFAULT_RULE in worst else None,
        "seconds": round(time.perf_counter() - started, 1),
    }


def markdown(report: Mapping[str, Any]) -> str:
    """Rows: attack, attackers, split; columns: rules. Below the floor in bold."""
    rules = list(dict.fromkeys(r["rule"] for r in report["results"]))
    rows: dict[tuple[str, int, str], dict[str, float]] = {}
    for r in report["results"]:
        rows.setdefault((r["attack"], r["attackers"], r["split"]), {})[r["rule"]] = r["accuracy"]
    shown: Callable[[float], str] = lambda a: f"{a:.3f}" if a >= report["floor"] else f"**{a:.3f}**"  # noqa: E731
    lines = ["| attack | of 5 | split | " + " | ".join(rules) + " |", "|---|---|---|" + "---|" * len(rules)]
    for (attack, k, split), accuracies in rows.items():
        cells = " | ".join(shown(accuracies[rule]) if rule in accuracies else "-" for rule in rules)
        lines.append(f"| {attack} | {k} | {split} | {cells} |")
    worst = report["worst_accuracy"]
    lines.append("| **worst under attack** | | | " + " | ".join(shown(worst[rule]) if rule in worst else "-" for rule in rules) + " |")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from ledger.cli.errors import CommandError, UsageError
    from ledger.core.errors import LedgerError

    if args.rounds < 1:
        raise UsageError(f"--rounds must be at least 1, got {args.rounds}")
    try:
        report = measure(args.rules, args.attacks, args.splits, args.attackers, args.rounds, task=args.task)
    except LedgerError as exc:  # an unknown task, or one without bundled data
        raise CommandError(str(exc)) from exc
    emit(report, as_json=args.json)
    if args.markdown:
        print(markdown(report))
    return 0
