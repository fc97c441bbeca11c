"""`fedledger node run`: an edge node that takes part in every round the chain opens."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ledger.core.polling import POLL_SECONDS  # a new round is noticed within one poll

log = logging.getLogger(__name__)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from ledger.cli.wiring import add_ledger_arguments

    node = subparsers.add_parser("node", help="run an edge node")
    sub = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="train on local data and submit an update to every round the chain opens")
    add_ledger_arguments(run)
    data = run.add_argument_group("local data (sklearn digits, split as the federation agreed)")
    data.add_argument("--node-index", type=int, required=True, help="this node's shard, 0-based")
    data.add_argument("--num-nodes", type=int, required=True, help="how many shards the data is split into")
    split = data.add_mutually_exclusive_group()
    split.add_argument("--iid", dest="iid", action="store_true", default=True, help="equal random shards (default)")
    split.add_argument("--non-iid", dest="iid", action="store_false", help="Dirichlet(alpha) label skew")
    data.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration for --non-iid")
    data.add_argument("--data-seed", type=int, default=0)
    training = run.add_argument_group(
        "training (the update encoding, and under DP the batch size and epochs, come from the policy genesis pins)"
    )
    training.add_argument("--epochs", type=int, default=5)
    training.add_argument("--batch-size", type=int, default=32)
    training.add_argument("--lr", type=float, default=0.05, help="SGD (momentum 0.9) step without DP")
    training.add_argument("--dp-lr", type=float, default=1.0, help="plain SGD step of DP-SGD, when the federation trains privately")
    training.add_argument("--seed", type=int, default=None, help="training seed (default: the node index)")
    run.add_argument("--rounds", type=int, default=None, help="exit once this round has closed (default: run forever)")
    run.add_argument(
        "--misbehave",
        choices=["tamper", "poison"],
        help="demo only: alter the blob at rest once stored, before its hash goes on chain (tamper, needs --tamper-dir) "
        "or submit NaN / hugely scaled weights (poison)",
    )
    run.add_argument("--tamper-dir", type=Path, help="with --misbehave tamper: the folder behind the store to alter")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ledger.cli.errors import CommandError
    from ledger.chain.client import RoundState
    from ledger.config import Settings
    from ledger.core.data import load_digits_split, split_shards
    from ledger.core.errors import LedgerError
    from ledger.store.base import BlobStoreError
    from ledger.cli.wiring import blob_store, ledger_client, signing_account

    from edge_node.misbehaviour import poison_transform, tamper_at_rest
    from edge_node.node import EdgeNode, Outcome, TrainingConfig, UnsupportedPolicy

    if not 0 <= args.node_index < args.num_nodes:
        raise CommandError(f"--node-index must be in 0..{args.num_nodes - 1}")
    try:
        client = ledger_client(args, account=signing_account(args))
        store = blob_store(args, client)
    except LedgerError as exc:
        raise CommandError(str(exc)) from exc
    split = load_digits_split(seed=args.data_seed)
    shard = split_shards(split.train, args.num_nodes, iid=args.iid, alpha=args.alpha, seed=args.data_seed)[args.node_index]
    config = TrainingConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.node_index if args.seed is None else args.seed,
        dp_lr=args.dp_lr,
    )
    transform = after_upload = None
    if args.misbehave == "poison":
        transform = poison_transform()
    elif args.misbehave == "tamper":
        if args.tamper_dir is None:
            raise CommandError("--misbehave tamper needs --tamper-dir: the folder behind the store to alter")
        after_upload = tamper_at_rest(args.tamper_dir)
    node = EdgeNode(
        client,
        store,
        shard,
        config,
        max_model_bytes=Settings().max_blob_bytes,
        transform=transform,
        after_upload=after_upload,
    )
    print(f"node {node.address}: shard {args.node_index}/{args.num_nodes}, {len(shard)} samples, ledger {client.address}", flush=True)
    handled: set[int] = set()
    while True:
        last_round = client.counters().last_round
        if last_round and last_round not in handled:
            try:
                result = node.participate(last_round)
            except UnsupportedPolicy as exc:
                raise CommandError(f"node {node.address} cannot join: {exc}") from exc
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
