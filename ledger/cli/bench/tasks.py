"""`fedledger bench tasks`: every built-in task federated for 10 rounds at 5 nodes, side by side.

Per task: median round wall time (open → finalize, in-process chain, nodes train one after the
other in this process), the bytes of one update blob against the full model's, the held-out
accuracy and loss after the last round, and whether every version re-derives bit for bit from the
chain and the store. The accuracy floors and the fine-tuning size ratio of issue 9 are the targets.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ledger.cli.bench.common import add_output_arguments, emit, median

NODES = 5
ROUNDS = 10
BUILT_IN = ("digits-mlp", "digits-cnn", "breast-cancer-logreg", "digits-finetune")
ACCURACY_TARGETS = {"digits-mlp": 0.90, "digits-cnn": 0.95, "breast-cancer-logreg": 0.93, "digits-finetune": 0.95}
SIZE_RATIO_TARGETS = {"digits-finetune": 10.0}  # full model bytes / update bytes
MAX_BYTES = 64 * 1024 * 1024


def measure_task(name: str, *, nodes: int, rounds: int, workdir: Path) -> dict[str, Any]:
    """One task's federation on a fresh in-process chain, its blobs under `workdir`."""
    from ledger.audit.rederive import verify_version
    from ledger.cli.federation import start_federation
    from ledger.store.local import LocalBlobStore
    from ledger.tasks.registry import load_task

    task = load_task(name)
    store = LocalBlobStore(workdir, max_bytes=MAX_BYTES)
    started = time.perf_counter()
    federation = start_federation(task, store, nodes=nodes, max_model_bytes=MAX_BYTES, min_updates=nodes)
    setup_seconds = time.perf_counter() - started
    genesis = federation.chain.admin.genesis_hash()
    assert genesis is not None
    wall, accuracy, results = [], [], []
    for _ in range(rounds):
        started = time.perf_counter()
        result = federation.run_round()
        wall.append(time.perf_counter() - started)
        results.append(result)
        accuracy.append(round(result.accuracy or 0.0, 4))
    update_bytes = len(store.get(results[0].included[0].update_hash))
    model_bytes = len(store.get(genesis))
    verdicts = [
        verify_version(federation.chain.admin, store, model_hash, max_bytes=MAX_BYTES)
        for model_hash in [genesis] + [r.model_hash for r in results if r.model_hash]
    ]
    spec = federation.aggregator.spec
    report: dict[str, Any] = {
        "spec_hash": spec.spec_hash,
        "parameters": sum(_count(t.shape) for t in spec.tensors),
        "trainable_parameters": sum(_count(t.shape) for t in spec.tensors if t.trainable),
        "hyperparameters": dict(spec.hyperparameters),
        "setup_seconds": round(setup_seconds, 3),
        "round_seconds_median": round(median(wall), 3),
        "update_bytes": update_bytes,
        "model_bytes": model_bytes,
        "model_to_update_ratio": round(model_bytes / update_bytes, 2),
        "accuracy_per_round": accuracy,
        "final_accuracy": accuracy[-1],
        "final_loss": round(results[-1].metrics["loss"], 4),
        "all_versions_verified": all(v is not None and v.ok for v in verdicts),
        "target": {"final_accuracy_min": ACCURACY_TARGETS.get(name)},
    }
    meets = report["all_versions_verified"] and accuracy[-1] >= ACCURACY_TARGETS.get(name, 0.0)
    if name in SIZE_RATIO_TARGETS:
        report["target"]["model_to_update_ratio_min"] = SIZE_RATIO_TARGETS[name]
        meets = meets and report["model_to_update_ratio"] >= SIZE_RATIO_TARGETS[name]
    report["meets_target"] = meets
    return report


def _count(shape: tuple[int, ...]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def measure_tasks(tasks: tuple[str, ...] = BUILT_IN, *, nodes: int = NODES, rounds: int = ROUNDS) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)  # the nodes take turns in this process; small models gain nothing from a second thread
    load_before = os.getloadavg()[0]
    reports = {}
    for name in tasks:
        with tempfile.TemporaryDirectory(prefix=f"fedledger-bench-{name}-") as workdir:
            reports[name] = measure_task(name, nodes=nodes, rounds=rounds, workdir=Path(workdir))
    return {
        "benchmark": "tasks",
        "nodes": nodes,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "tasks": reports,
        "notes": (
            "In-process py-evm chain and local blob store; the aggregator and every node run in this process, "
            "one thread, nodes one after the other, so a round's wall time is the sum of the nodes' training. "
            "IID shares of each task's bundled data, the task's default hyperparameters, fedavg. "
            "update_bytes: one update blob (only trainable tensors travel); model_bytes: the full model blob. "
            "all_versions_verified: genesis and every round re-derived bit for bit (ledger.audit.rederive)."
        ),
        "meets_target": all(report["meets_target"] for report in reports.values()),
    }


def add_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tasks", help="each built-in task federated: round time, update bytes, final accuracy")
    parser.add_argument("--task", dest="tasks", action="append", choices=BUILT_IN, help="only these tasks (repeatable)")
    parser.add_argument("--nodes", type=int, default=NODES)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    add_output_arguments(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    report = measure_tasks(tuple(args.tasks or BUILT_IN), nodes=args.nodes, rounds=args.rounds)
    emit(report, as_json=args.json)
    return 0 if report["meets_target"] else 1
