"""`fedledger bench updates`: what each update encoding costs in bytes and accuracy, and what DP costs.

Runs real federations on the in-process chain (the real aggregator and edge nodes, a local blob
store in a temporary folder): `nodes` nodes, `rounds` rounds, IID digits shards, FedAvg.

- Encodings: one federation per encoding (f32, f16, int8) with the same seeded training; the
  median bytes of an update blob, the final test accuracy, both against f32, and whether the last
  version re-derives from the chain and the blobs. Target: int8 ≤ 26 % of f32's bytes, within 1
  accuracy point.
- Privacy: federations whose nodes train with DP-SGD (Opacus) at a noise multiplier calibrated so
  that a node's ε after `rounds` rounds is at most the target (≈ 1, 3, 8; δ = 1e-5), next to the
  same federation without DP. DP noise is drawn from OS entropy, so each target runs `repeats`
  times and reports the median and every value.

Like `ledger.cli.demo`, a composition root: it imports both `aggregator` and `edge_node`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from ledger.cli.bench.common import add_output_arguments, emit, median

ENCODINGS = ("f32", "f16", "int8")
DP_TARGETS = (8.0, 3.0, 1.0)
INT8_BYTES_TARGET = 0.26
INT8_ACCURACY_POINTS = 1.0
DELTA = 1e-5
MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class DpSetting:
    """The pinned DP-SGD shape for a target ε (chosen on digits: see README.md, "Privacy")."""

    target: float
    batch_size: int
    epochs: int


# At ε ≈ 1 the noise must be large: fewer, larger batches keep more signal per step.
DP_SETTINGS = (DpSetting(8.0, 64, 2), DpSetting(3.0, 64, 2), DpSetting(1.0, 96, 1))


def add_bench(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("updates", help="bytes and accuracy per update encoding, and accuracy under DP")
    bench.add_argument("--nodes", type=int, default=5)
    bench.add_argument("--rounds", type=int, default=10)
    bench.add_argument("--epochs", type=int, default=5, help="local epochs without DP")
    bench.add_argument("--repeats", type=int, default=3, help="runs per DP target (the noise differs each run)")
    bench.add_argument("--dp-targets", type=float, nargs="*", default=list(DP_TARGETS), metavar="EPSILON",
                       help="ε targets to run (8, 3 and 1 have tuned settings; none to skip DP)")
    add_output_arguments(bench)
    bench.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    report = measure_updates(
        nodes=args.nodes, rounds=args.rounds, epochs=args.epochs, repeats=args.repeats, dp_targets=tuple(args.dp_targets)
    )
    emit(report, as_json=args.json)
    return 0


def measure_updates(
    *, nodes: int, rounds: int, epochs: int, repeats: int, dp_targets: tuple[float, ...] = DP_TARGETS
) -> dict[str, Any]:
    import torch

    from ledger.core.policy import RDP_ORDERS, PrivacyPolicy, epsilon_text
    from ledger.privacy.accountant import calibrate_noise_multiplier

    torch.set_num_threads(1)  # the model is tiny: a second thread only adds overhead
    encodings: dict[str, dict[str, Any]] = {}
    for encoding in ENCODINGS:
        run = _federation(nodes=nodes, rounds=rounds, epochs=epochs, encoding=encoding, privacy=None)
        encodings[encoding] = {key: run[key] for key in ("update_bytes_median", "final_accuracy", "rejected", "verified")}
    reference = encodings["f32"]
    for figures in encodings.values():
        figures["bytes_vs_f32"] = round(figures["update_bytes_median"] / reference["update_bytes_median"], 4)
        figures["accuracy_points_vs_f32"] = round(100 * (figures["final_accuracy"] - reference["final_accuracy"]), 2)
    int8 = encodings["int8"]

    shard_size = _shard_sizes(nodes)
    privacy: dict[str, Any] = {"none": {"final_accuracy": reference["final_accuracy"], "encoding": "f32"}}
    for target in dp_targets:
        setting = next((s for s in DP_SETTINGS if s.target == target), DpSetting(target, 64, 2))
        probe = PrivacyPolicy(noise_multiplier=1.0, max_grad_norm=MAX_GRAD_NORM, delta=DELTA, epsilon_budget="1.000000",
                              batch_size=setting.batch_size, epochs=setting.epochs)  # fmt: skip
        rates = {probe.sample_rate(n) for n in shard_size}
        steps = {probe.steps(n) for n in shard_size}
        sigma = max(
            calibrate_noise_multiplier(target, sample_rate=q, steps_per_round=k, rounds=rounds, delta=DELTA, orders=RDP_ORDERS)
            for q in rates
            for k in steps
        )
        policy = PrivacyPolicy(
            noise_multiplier=sigma, max_grad_norm=MAX_GRAD_NORM, delta=DELTA, epsilon_budget=epsilon_text(target),
            batch_size=setting.batch_size, epochs=setting.epochs,
        )  # fmt: skip
        runs = [_federation(nodes=nodes, rounds=rounds, epochs=epochs, encoding="f32", privacy=policy) for _ in range(repeats)]
        accuracies = [run["final_accuracy"] for run in runs]
        privacy[f"epsilon_{target:g}"] = {
            "noise_multiplier": sigma,
            "batch_size": setting.batch_size,
            "epochs_per_round": setting.epochs,
            "sample_rates": sorted(rates),
            "epsilon_recorded_after_last_round": max((run["epsilon_max"] or "0" for run in runs), key=Decimal),
            "final_accuracy_median": median(accuracies),
            "final_accuracy_stdev": round(statistics.stdev(accuracies), 4) if len(accuracies) > 1 else 0.0,
            "final_accuracies": accuracies,
            "rejected_updates": sum(run["rejected"] for run in runs),
            "verified": all(run["verified"] for run in runs),
        }
    return {
        "task": "digits",
        "nodes": nodes,
        "rounds": rounds,
        "epochs_without_dp": epochs,
        "encodings": encodings,
        "targets": {"int8_bytes_vs_f32_max": INT8_BYTES_TARGET, "int8_accuracy_points_max": INT8_ACCURACY_POINTS},
        "int8_meets_targets": int8["bytes_vs_f32"] <= INT8_BYTES_TARGET
        and abs(int8["accuracy_points_vs_f32"]) <= INT8_ACCURACY_POINTS,
        "privacy": {"delta": DELTA, "max_grad_norm": MAX_GRAD_NORM, "accountant": "opacus-rdp", "runs": privacy},
    }


def _shard_sizes(nodes: int) -> list[int]:
    from ledger.tasks.digits import DIGITS_MLP
    from ledger.tasks.partition import split_examples

    return [len(shard) for shard in split_examples(DIGITS_MLP.bundled_data().train, nodes, iid=True, seed=0)]


def _federation(*, nodes: int, rounds: int, epochs: int, encoding: str, privacy: Any) -> dict[str, Any]:
    """One federation from genesis; its update sizes, final accuracy, ε and whether it re-derives."""
    from aggregator.coordinator import Aggregator, AggregatorConfig
    from edge_node.node import EdgeNode, TrainingConfig
    from ledger.audit.rederive import verify_version
    from ledger.chain.inprocess import start_in_process_ledger
    from ledger.store.local import LocalBlobStore
    from ledger.tasks.digits import DIGITS_MLP
    from ledger.tasks.partition import split_examples

    max_bytes = 64 << 20
    split = DIGITS_MLP.bundled_data()
    shards = split_examples(split.train, nodes, iid=True, seed=0)
    hyper = {"epochs": epochs}
    with tempfile.TemporaryDirectory(prefix="fedledger-bench-updates-") as folder:
        store = LocalBlobStore(Path(folder), max_bytes=max_bytes)
        chain = start_in_process_ledger(nodes)
        config = AggregatorConfig(task=DIGITS_MLP, hyperparameters=hyper, min_updates=1, encoding=encoding, privacy=privacy)
        aggregator = Aggregator(chain.admin, store, split.test, config)
        aggregator.ensure_genesis()
        members = [
            EdgeNode(client, store, shard, TrainingConfig(DIGITS_MLP, hyper, seed=index), max_model_bytes=max_bytes)
            for index, (client, shard) in enumerate(zip(chain.nodes, shards))
        ]
        sizes: list[int] = []
        result = None
        rejected = 0
        for _ in range(rounds):
            info = aggregator.open_round()
            for node in members:
                sent = node.participate(info.round)
                if sent.update_hash is not None:
                    sizes.append(len(store.get(sent.update_hash)))
            result = aggregator.close_round(info.round)
            rejected += len(result.rejected)
        assert result is not None and result.model_hash is not None
        verdict = verify_version(chain.admin, store, result.model_hash)
        return {
            "update_bytes_median": int(median(sizes)),
            "final_accuracy": round(result.accuracy or 0.0, 4),
            "epsilon_max": max(result.epsilons.values(), default=None),
            "rejected": rejected,
            "verified": verdict is not None and verdict.ok,
        }
