"""`fedledger node run`: an edge node that takes part in every round the chain opens."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.core.polling import POLL_SECONDS  # a new round is noticed within one poll

if TYPE_CHECKING:
    from ledger.core.task import Examples, Task

# The attacks `--misbehave` offers besides tamper and poison (kept in step with edge_node.misbehaviour.ATTACKS,
# which this light module must not import: its command table is built without torch).
ATTACKS = ("sign_flip", "label_flip", "scaling", "slow_poison", "inflated_samples", "copy_hash", "free_rider")

log = logging.getLogger(__name__)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from ledger.cli.wiring import add_ledger_arguments, add_share_arguments, add_task_arguments

    node = subparsers.add_parser("node", help="run an edge node")
    sub = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="train on local data and submit an update to every round the chain opens")
    add_ledger_arguments(run)
    training = run.add_argument_group(
        "task and training (the federation pins the task's spec at genesis; the update encoding, and under DP "
        "the batch size and epochs, come from the policy genesis pins)"
    )
    add_task_arguments(training)
    training.add_argument("--dp-lr", type=float, default=1.0, help="plain SGD step of DP-SGD, when the federation trains privately")
    training.add_argument("--seed", type=int, default=None, help="training seed (default: the node index, else 0)")
    data = run.add_argument_group("local data: a file the node owns, or a share of the task's bundled data set")
    data.add_argument("--data", type=Path, help="this node's data in the task's format (e.g. from `fedledger data split`)")
    data.add_argument("--node-index", type=int, help="without --data: this node's share of the bundled data, 0-based")
    data.add_argument("--num-nodes", type=int, help="without --data: how many shares the bundled data is split into")
    add_share_arguments(data)
    data.add_argument("--data-seed", type=int, default=0, help="seed of the split into shares")
    run.add_argument("--rounds", type=int, default=None, help="exit once this round has closed (default: run forever)")
    run.add_argument(
        "--misbehave",
        choices=["tamper", "poison", *ATTACKS],
        help="demo only: alter the blob at rest once stored, before its hash goes on chain (tamper, needs --tamper-dir), "
        "submit NaN / hugely scaled weights (poison), or poison within every check (the other choices; see "
        "edge_node/misbehaviour.py)",
    )
    run.add_argument("--tamper-dir", type=Path, help="with --misbehave tamper: the folder behind the store to alter")
    run.add_argument(
        "--attack-max-norm",
        type=float,
        default=100.0,
        help="the federation's norm bound, which norm-bounded attacks stay just under (default 100)",
    )
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ledger.cli.errors import CommandError
    from ledger.chain.client import RoundState
    from ledger.config import Settings
    from ledger.core.errors import LedgerError
    from ledger.core.task_spec import TaskSpecMismatch
    from ledger.store.base import BlobStoreError
    from ledger.cli.wiring import blob_store, ledger_client, resolve_task, signing_account

    from edge_node.misbehaviour import attack_named, poison_transform, tamper_at_rest
    from edge_node.node import EdgeNode, Outcome, TrainingConfig, UnsupportedPolicy

    task, overrides = resolve_task(args)
    shard, where = _local_data(args, task)  # bad data is refused before any chain call
    default_seed = args.node_index if args.data is None else 0
    seed = default_seed if args.seed is None else args.seed
    config = TrainingConfig(task=task, hyperparameters=overrides, seed=seed, dp_lr=args.dp_lr)
    try:
        client = ledger_client(args, account=signing_account(args))
        store = blob_store(args, client)
    except LedgerError as exc:
        raise CommandError(str(exc)) from exc
    transform = after_upload = attack = None
    if args.misbehave == "poison":
        transform = poison_transform()
    elif args.misbehave == "tamper":
        if args.tamper_dir is None:
            raise CommandError("--misbehave tamper needs --tamper-dir: the folder behind the store to alter")
        after_upload = tamper_at_rest(args.tamper_dir)
    elif args.misbehave is not None:
        attack = attack_named(args.misbehave, max_norm=args.attack_max_norm)
    node = EdgeNode(
        client,
        store,
        shard,
        config,
        max_model_bytes=Settings().max_blob_bytes,
        transform=transform,
        after_upload=after_upload,
        attack=attack,
    )
    try:
        spec_hash = node.spec.spec_hash
    except LedgerError as exc:
        raise CommandError(str(exc)) from exc
    print(f"node {node.address}: task {task.name} (spec {spec_hash[:12]}), {where}, {len(shard)} samples, ledger {client.address}", flush=True)
    try:
        node.policy()  # refuse at once if the federation already pinned another task or a policy it cannot follow
    except (TaskSpecMismatch, UnsupportedPolicy) as exc:
        raise _cannot_join(node.address, exc) from exc
    except (LookupError, BlobStoreError, LedgerError, ValueError):
        pass  # no genesis yet, or its metadata not reachable yet: checked again before the first round
    handled: set[int] = set()
    while True:
        last_round = client.counters().last_round
        if last_round and last_round not in handled:
            try:
                result = node.participate(last_round)
            except (TaskSpecMismatch, UnsupportedPolicy) as exc:  # not this round's problem: this node cannot join
                raise _cannot_join(node.address, exc) from exc
            except (BlobStoreError, LedgerError, ValueError) as exc:
                # A bad base blob or a refused upload loses this round, not the node.
                print(f"node {node.address}: round {last_round}: skipped: {exc}", flush=True)
                result = None
            handled.add(last_round)
            if result is not None and result.outcome is Outcome.SUBMITTED:
                spent = "" if result.epsilon is None else f", ε {result.epsilon}"
                print(
                    f"node {node.address}: round {last_round}: submitted {result.update_hash} "
                    f"({result.num_samples} samples, trained in {result.train_seconds:.2f}s{spent})",
                    flush=True,
                )
            elif result is not None:
                print(f"node {node.address}: round {last_round}: {result.outcome.value}", flush=True)
        if args.rounds is not None and last_round >= args.rounds:
            if client.get_round(args.rounds).state is not RoundState.OPEN:
                print(f"node {node.address}: round {args.rounds} closed; done", flush=True)
                return 0
        time.sleep(POLL_SECONDS)


def _cannot_join(address: str, problem: Exception) -> Exception:
    """The one line a node that cannot take part exits with (its task, or a policy it cannot follow)."""
    from ledger.cli.errors import CommandError
    from ledger.core.task_spec import TaskSpecMismatch

    return CommandError(str(problem) if isinstance(problem, TaskSpecMismatch) else f"node {address} cannot join: {problem}")


def _local_data(args: argparse.Namespace, task: Task) -> tuple[Examples, str]:
    """(data, where it came from): the --data file, or this node's share of the task's bundled data."""
    from ledger.cli.errors import CommandError, UsageError
    from ledger.cli.wiring import load_data_file
    from ledger.core.errors import LedgerError
    from ledger.tasks.partition import split_examples

    if args.data is not None:
        if args.node_index is not None or args.num_nodes is not None:
            raise UsageError("--data is this node's whole data set: drop --node-index/--num-nodes")
        return load_data_file(task, args.data), f"data {args.data}"
    if args.node_index is None or args.num_nodes is None:
        raise UsageError("give --data FILE, or --node-index and --num-nodes for a share of the bundled data")
    if not 0 <= args.node_index < args.num_nodes:
        raise UsageError(f"--node-index must be in 0..{args.num_nodes - 1}")
    try:
        pool = task.bundled_data().train
        shares = split_examples(pool, args.num_nodes, iid=args.iid, alpha=args.alpha, seed=args.data_seed)
    except (LedgerError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    return shares[args.node_index], f"share {args.node_index}/{args.num_nodes} of its bundled data"
