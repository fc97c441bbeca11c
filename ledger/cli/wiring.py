"""Builds a process's runtime pieces from its command line: chain client, signing key, store, task.

Every long-running command (edge node, aggregator, audit) takes the same chain, store and task
options and resolves them the same way, here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.config import Settings

if TYPE_CHECKING:  # imported where used: a command that needs no chain (task new) loads no web3
    from eth_account.signers.local import LocalAccount

    from ledger.chain.client import LedgerClient
    from ledger.core.task import Examples, Task
    from ledger.store.base import BlobStore

DEFAULT_TASK = "digits-mlp"  # ledger.tasks.registry.DEFAULT_TASK, without importing torch for --help


def add_ledger_arguments(parser: argparse.ArgumentParser, *, signing: bool = True) -> None:
    """--rpc-url, --contract, the key (if `signing`) and the store."""
    parser.add_argument("--rpc-url", help="JSON-RPC endpoint (default $FEDLEDGER_RPC_URL or the devnet)")
    parser.add_argument("--contract", help="ledger address (default: var/deployments/<chainId>.json)")
    if signing:
        keys = parser.add_mutually_exclusive_group(required=True)
        keys.add_argument("--keystore", type=Path, help="encrypted keystore; password in $FEDLEDGER_KEYSTORE_PASSWORD")
        keys.add_argument("--dev-key", type=int, metavar="INDEX", help="anvil dev account INDEX (devnet only)")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--store", metavar="URL", help="ledger service URL serving /blobs (HTTP store)")
    store.add_argument("--blobs-dir", type=Path, help="local content-addressed folder (default var/blobs)")


def ledger_client(args: argparse.Namespace, *, account: LocalAccount | None) -> LedgerClient:
    from ledger.chain.client import LedgerClient
    from ledger.chain.connect import connect
    from ledger.chain.deploy import load_deployment

    settings = Settings().with_overrides(rpc_url=args.rpc_url, contract_address=args.contract)
    w3 = connect(settings.rpc_url)
    address = settings.contract_address or load_deployment(w3).address
    return LedgerClient(w3, address, account)


def signing_account(args: argparse.Namespace) -> LocalAccount:
    from ledger.chain.keys import resolve_account

    return resolve_account(keystore=args.keystore, dev_key_index=args.dev_key)


def blob_store(args: argparse.Namespace, client: LedgerClient) -> BlobStore:
    """The HTTP store when --store is given (uploads signed with the client's key), else a local folder."""
    settings = Settings().with_overrides(blobs_dir=args.blobs_dir)
    if args.store:
        from ledger.store.http import HttpBlobStore

        return HttpBlobStore.from_ledger(
            args.store, client, account=client.account, max_bytes=settings.max_blob_bytes
        )
    from ledger.store.local import LocalBlobStore

    return LocalBlobStore(settings.blobs_dir, max_bytes=settings.max_blob_bytes)


def name_value(text: str) -> tuple[str, Any]:
    """NAME=VALUE with VALUE read as JSON when it is JSON (1, 0.5, true, "x"), else as a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def add_task_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    hyperparameters: bool = True,
    default: str | None = DEFAULT_TASK,
    default_help: str = DEFAULT_TASK,
) -> None:
    """--task, and (if `hyperparameters`) --hyper NAME=VALUE and its --epochs shorthand."""
    parser.add_argument(
        "--task", default=default, metavar="TASK",
        help=f"an installed task's name (`fedledger task list`) or package.module:attr (default: {default_help})",
    )  # fmt: skip
    if hyperparameters:
        add_hyperparameter_arguments(parser)


def add_share_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--iid (default) or --non-iid with --alpha: how a bundled data set is shared out between nodes."""
    skew = parser.add_mutually_exclusive_group()
    skew.add_argument("--iid", dest="iid", action="store_true", default=True, help="equal random shares (default)")
    skew.add_argument("--non-iid", dest="iid", action="store_false", help="Dirichlet(alpha) label skew")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration for --non-iid")


def add_hyperparameter_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--hyper NAME=VALUE (repeatable) and its --epochs shorthand."""
    parser.add_argument(
        "--hyper", type=name_value, action="append", default=[], metavar="NAME=VALUE",
        help="override one of the task's hyperparameters (repeatable); every party must use the same",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, help="shorthand for --hyper epochs=N")


def load_data_file(task: Task, path: Path) -> Examples:
    """`task.load_data(path)`, any refusal as a one-line `CommandError` naming the file."""
    from ledger.cli.errors import CommandError
    from ledger.core.errors import LedgerError

    try:
        return task.load_data(path)
    except LedgerError as exc:  # DataError: its one line names the file already
        raise CommandError(str(exc)) from exc
    except (ValueError, OSError) as exc:  # a team's own loader, refusing in its own words
        raise CommandError(f"{path}: {exc}") from exc


def resolve_task(args: argparse.Namespace) -> tuple[Task, dict[str, Any]]:
    """The task named by --task and its hyperparameter overrides, checked (`UsageError` if unusable)."""
    from ledger.cli.errors import UsageError
    from ledger.core.task import TaskError, resolve_hyperparameters
    from ledger.tasks.registry import load_task

    overrides = dict(getattr(args, "hyper", []) or [])
    if getattr(args, "epochs", None) is not None:
        overrides["epochs"] = args.epochs
    try:
        task = load_task(args.task)
        resolve_hyperparameters(task, overrides)
    except TaskError as exc:
        raise UsageError(str(exc)) from exc
    return task, overrides
