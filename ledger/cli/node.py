"""`fedledger node run|list|register|revoke`: an edge node, and the admin's view of who may submit."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ledger.core.task import Examples, Task

# The attacks `--misbehave` offers besides tamper and poison (kept in step with edge_node.misbehaviour.ATTACKS,
# which this light module must not import: its command table is built without torch).
ATTACKS = ("sign_flip", "label_flip", "scaling", "slow_poison", "inflated_samples", "copy_hash", "free_rider")

log = logging.getLogger(__name__)

# With no news, look at the chain's state again this often anyway (a notification can be missed
# while a devnet restarts); news itself wakes the node at once.
RECHECK_SECONDS = 10.0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from ledger.cli.wiring import (
        add_chain_arguments,
        add_key_arguments,
        add_ledger_arguments,
        add_share_arguments,
        add_task_arguments,
    )

    node = subparsers.add_parser("node", help="run an edge node; list, register or revoke nodes")
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
    training.add_argument(
        "--threads", type=int, default=1, help="torch threads for training (default 1: the model is small; more only contend)"
    )
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

    listing = sub.add_parser("list", help="the registered nodes (and revoked ones), from the chain's events")
    add_chain_arguments(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)
    for name, handler, text in (
        ("register", _register, "register a node (admin key)"),
        ("revoke", _revoke, "revoke a node: it can no longer submit or upload (admin key)"),
    ):
        action = sub.add_parser(name, help=text)
        action.add_argument("address", help="the node's account address")
        add_chain_arguments(action)
        add_key_arguments(action)
        action.add_argument("--json", action="store_true", help="print JSON")
        action.set_defaults(handler=handler)


def _run(args: argparse.Namespace) -> int:
    from ledger.chain import events
    from ledger.chain.client import RoundState
    from ledger.chain.follow import LedgerFollower, of_type
    from ledger.cli.errors import UsageError
    from ledger.cli.logs import set_role
    from ledger.cli.wiring import Role, blob_store, ledger_client, resolve_task, settings, signing_account
    from ledger.core.errors import LedgerError, Unavailable
    from ledger.core.progress import report
    from ledger.core.task_spec import TaskSpecMismatch
    from ledger.store.base import BlobStoreError

    if args.misbehave == "tamper" and args.tamper_dir is None:
        raise UsageError("--misbehave tamper needs --tamper-dir: the folder behind the store to alter")
    if args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    task, overrides = resolve_task(args)
    shard, where = _local_data(args, task)  # bad data is refused before any chain call
    account = signing_account(args)
    set_role(f"node {account.address}")
    client = ledger_client(args, account=account, role=Role.NODE)
    store = blob_store(args, client)

    from edge_node.misbehaviour import attack_named, poison_transform, tamper_at_rest
    from edge_node.node import EdgeNode, Outcome, TrainingConfig, UnsupportedPolicy
    from ledger.core.heap import freeze_heap
    from ledger.core.threads import pin_threads

    threads = pin_threads(args.threads)
    default_seed = args.node_index if args.data is None else 0
    seed = default_seed if args.seed is None else args.seed
    transform = after_upload = attack = None
    if args.misbehave == "poison":
        transform = poison_transform()
    elif args.misbehave == "tamper":
        after_upload = tamper_at_rest(args.tamper_dir)
    elif args.misbehave is not None:
        attack = attack_named(args.misbehave, max_norm=args.attack_max_norm)
    node = EdgeNode(
        client,
        store,
        shard,
        TrainingConfig(task=task, hyperparameters=overrides, seed=seed, dp_lr=args.dp_lr),
        max_model_bytes=settings(args).max_blob_bytes,
        transform=transform,
        after_upload=after_upload,
        attack=attack,
    )
    spec_hash = node.spec.spec_hash
    try:
        node.policy()  # refuse at once if the federation already pinned another task or a policy it cannot follow
    except (TaskSpecMismatch, UnsupportedPolicy) as exc:
        raise _cannot_join(node.address, exc) from exc
    except (LookupError, BlobStoreError, LedgerError, ValueError):
        pass  # no genesis yet, or its metadata not reachable yet: checked again before the first round
    node.warm_up()  # the first pass through torch is the slow one: pay it now, not inside round 1's window
    report(
        log,
        "ready",
        "ready: task {task} (spec {spec}), {where}, {samples} samples, ledger {ledger}, {threads} torch threads",
        task=task.name,
        spec=spec_hash[:12],
        where=where,
        samples=len(shard),
        ledger=client.address,
        threads=threads,
    )
    follower = LedgerFollower.from_head(client.w3, client.address)
    freeze_heap()
    handled: set[int] = set()
    last_round = client.counters().last_round
    while True:
        if last_round and last_round not in handled:
            try:
                result = node.participate(last_round)
                if result.outcome is not Outcome.SUBMITTED:
                    report(log, "outcome", "round {round}: {outcome}", round=last_round, outcome=result.outcome.value)
            except (TaskSpecMismatch, UnsupportedPolicy) as exc:  # not this round's problem: this node cannot join
                raise _cannot_join(node.address, exc) from exc
            except BlobStoreError as exc:
                if isinstance(exc, Unavailable):
                    what = "the store stayed unreachable"
                else:
                    what = "the store refused"
                report(log, "skipped", "round {round}: {what} ({error}); trying again next round", round=last_round, what=what, error=exc)
            except Unavailable:
                raise  # the chain stayed away longer than our patience: exit 3, a restart resumes
            except (LedgerError, ValueError) as exc:
                # A bad base blob or a refused transaction loses this round, not the node.
                report(log, "skipped", "round {round}: skipped: {error}", round=last_round, error=exc)
            handled.add(last_round)
        if args.rounds is not None and last_round >= args.rounds:
            if client.get_round(args.rounds).state is not RoundState.OPEN:
                report(log, "done", "round {round} closed; done", round=args.rounds)
                return 0
        # Sleep until the chain has news for us: a round opened or closed. Nothing is asked of the
        # chain meanwhile beyond the new blocks' logs (see ledger.chain.follow).
        recheck_at = time.monotonic() + RECHECK_SECONDS
        while True:
            found = follower.wait(timeout=max(0.0, recheck_at - time.monotonic()))
            news = of_type(found, events.RoundOpened, events.ModelCommitted, events.RoundAbandoned)
            if news:
                last_round = max([last_round] + [e.round for e in news if isinstance(e, events.RoundOpened)])
                break
            if time.monotonic() >= recheck_at:
                last_round = client.counters().last_round
                break


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


# ------------------------------------------------------------------ the admin's commands


def _list(args: argparse.Namespace) -> int:
    from ledger.chain import events
    from ledger.cli.wiring import ledger_client

    client = ledger_client(args, account=None)
    nodes: dict[str, dict[str, object]] = {}
    for event in client.events(event_type=None):
        if isinstance(event, events.NodeRegistered):
            nodes[event.node] = {"address": event.node, "active": True, "registered_block": event.ref.block_number, "revoked_block": None}
        elif isinstance(event, events.NodeRevoked) and event.node in nodes:
            nodes[event.node].update(active=False, revoked_block=event.ref.block_number)
    rows = list(nodes.values())
    if args.json:
        print(json.dumps({"ledger": client.address, "nodes": rows}, indent=2))
        return 0
    active = sum(1 for row in rows if row["active"])
    print(f"ledger {client.address}: {active} registered nodes" + (f", {len(rows) - active} revoked" if len(rows) > active else ""))
    for row in rows:
        state = "registered" if row["active"] else f"revoked in block {row['revoked_block']}"
        print(f"  {row['address']}  {state} (block {row['registered_block']})")
    return 0


def _change(args: argparse.Namespace, *, register: bool) -> int:
    from web3 import Web3

    from ledger.cli.errors import UsageError
    from ledger.cli.wiring import Role, ledger_client, signing_account

    if not Web3.is_address(args.address):
        raise UsageError(f"{args.address!r} is not an address (0x and 40 hex digits)")
    address = Web3.to_checksum_address(args.address)
    client = ledger_client(args, account=signing_account(args), role=Role.ADMIN)
    already = client.is_node(address) == register
    result = None
    if not already:
        result = client.register_node(address) if register else client.revoke_node(address)
    verb = "registered" if register else "revoked"
    if args.json:
        print(json.dumps({"ledger": client.address, "node": address, "action": verb, "changed": not already,
                          "block": result.block_number if result else None}))
    elif already:
        print(f"{address} is already {'registered' if register else 'not a registered node'} on ledger {client.address}")
    else:
        print(f"{verb} node {address} on ledger {client.address} (block {result.block_number})")  # type: ignore[union-attr]
    return 0


def _register(args: argparse.Namespace) -> int:
    return _change(args, register=True)


def _revoke(args: argparse.Namespace) -> int:
    return _change(args, register=False)
