"""Builds a process's runtime pieces from its command line: chain client, signing key, store, task.

Every command that talks to a ledger takes the same chain, key, store and task options and resolves
them the same way, here, through `ledger.config.Settings` (flags, then FEDLEDGER_* variables, then
defaults). Everything is checked before any training or waiting starts, each failure in one line:
the RPC answers (else exit 3), `--contract` is an address (else 2) holding this fedledger's
FederatedLedger (else 1), the key holds the role the command needs (else 1), the store answers
(else 3).
"""

from __future__ import annotations

import argparse
import json
import math
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.cli.errors import CommandError, UsageError
from ledger.config import Settings

if TYPE_CHECKING:  # imported where used: a command that needs no chain (task new) loads no web3
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

    from ledger.chain.client import LedgerClient
    from ledger.core.task import Examples, Task
    from ledger.store.base import BlobStore

DEFAULT_TASK = "digits-mlp"  # ledger.tasks.registry.DEFAULT_TASK, without importing torch for --help


class Role(Enum):
    """What a key must be on the ledger for a command to make sense."""

    NODE = "a registered node"
    AGGREGATOR = "an aggregator"
    ADMIN = "the admin"


def add_chain_arguments(parser: argparse.ArgumentParser) -> None:
    """--rpc-url, --contract and --patience: where the ledger is, and how long to wait for it."""
    parser.add_argument("--rpc-url", help="JSON-RPC endpoint (default $FEDLEDGER_RPC_URL or the devnet)")
    parser.add_argument("--contract", help="ledger address (default $FEDLEDGER_CONTRACT, else var/deployments/<chainId>.json)")
    parser.add_argument(
        "--patience",
        type=float,
        metavar="SECONDS",
        help="ride out an unreachable chain or store this long, then exit with code 3 (default $FEDLEDGER_PATIENCE or 120)",
    )


def add_key_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    keys = parser.add_mutually_exclusive_group(required=required)
    keys.add_argument("--keystore", type=Path, help="encrypted keystore; password in $FEDLEDGER_KEYSTORE_PASSWORD")
    keys.add_argument("--dev-key", type=int, metavar="INDEX", help="anvil dev account INDEX (devnet only)")


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--store", metavar="URL", help="ledger service URL serving /blobs (default $FEDLEDGER_STORE_URL)")
    store.add_argument("--blobs-dir", type=Path, help="local content-addressed folder (default var/blobs)")


def add_ledger_arguments(parser: argparse.ArgumentParser, *, signing: bool = True) -> None:
    """The chain options, the key (if `signing`) and the store."""
    add_chain_arguments(parser)
    if signing:
        add_key_arguments(parser)
    add_store_arguments(parser)


def settings(args: argparse.Namespace) -> Settings:
    """The one settings object, with this command line's flags applied."""
    return Settings().with_overrides(
        rpc_url=getattr(args, "rpc_url", None),
        contract_address=getattr(args, "contract", None),
        patience=getattr(args, "patience", None),
        store_url=getattr(args, "store", None),
        blobs_dir=getattr(args, "blobs_dir", None),
    )


def connect_chain(args: argparse.Namespace) -> Web3:
    """A patient connection to the chain; exit 3 at once if nothing answers."""
    from ledger.chain.connect import connect

    configured = settings(args)
    return connect(configured.rpc_url, patience=configured.patience)


def ledger_client(
    args: argparse.Namespace, *, account: LocalAccount | None, role: Role | None = None
) -> LedgerClient:
    """A client for the ledger these options name, after checking it is one and `account` holds `role`."""
    from web3 import Web3

    from ledger.chain.client import LedgerClient
    from ledger.chain.deploy import check_ledger_code, load_deployment

    configured = settings(args)
    if configured.contract_address is not None and not Web3.is_address(configured.contract_address):
        raise UsageError(f"--contract {configured.contract_address!r} is not an address (0x and 40 hex digits)")
    w3 = connect_chain(args)
    if configured.contract_address is not None:
        address: str = Web3.to_checksum_address(configured.contract_address)
        check_ledger_code(w3, address)
    else:
        address = load_deployment(w3).address  # checks the code too
    client = LedgerClient(w3, address, account)
    if role is not None and account is not None:
        check_role(client, account.address, role)
    return client


def check_role(client: LedgerClient, address: str, role: Role) -> None:
    """`CommandError` naming the fix unless `address` holds `role` on the client's ledger."""
    if role is Role.NODE and not client.is_node(address):
        raise CommandError(
            f"{address} is not a registered node of ledger {client.address}: "
            f"the admin registers it with `fedledger node register {address}`"
        )
    if role is Role.AGGREGATOR and not client.is_aggregator(address):
        raise CommandError(f"{address} does not hold the aggregator role on ledger {client.address}: use the aggregator's key")
    if role is Role.ADMIN and client.admin() != address:
        raise CommandError(f"{address} is not the admin of ledger {client.address} (the admin is {client.admin()})")


def signing_account(args: argparse.Namespace) -> LocalAccount:
    """The key from --keystore or --dev-key; a bad index or keystore is one line, not a traceback."""
    from ledger.chain.devkeys import DEV_ACCOUNT_COUNT
    from ledger.chain.keys import resolve_account
    from ledger.core.errors import LedgerError

    if args.dev_key is not None and not 0 <= args.dev_key < DEV_ACCOUNT_COUNT:
        raise UsageError(f"--dev-key {args.dev_key}: the devnet's dev accounts are 0..{DEV_ACCOUNT_COUNT - 1}")
    try:
        return resolve_account(keystore=args.keystore, dev_key_index=args.dev_key)
    except LedgerError as exc:
        raise CommandError(str(exc)) from exc


def blob_store(args: argparse.Namespace, client: LedgerClient, *, check: bool = True) -> BlobStore:
    """The HTTP store when a store URL is configured (uploads signed with the client's key), else a
    local folder; with `check`, one request proves the server answers (exit 3 at once if not)."""
    configured = settings(args)
    if configured.store_url:
        from ledger.store.http import HttpBlobStore

        store = HttpBlobStore.from_ledger(
            configured.store_url,
            client,
            account=client.account,
            max_bytes=configured.max_blob_bytes,
            patience=configured.patience,
        )
        if check:
            store.check()
        return store
    from ledger.store.local import LocalBlobStore

    try:
        return LocalBlobStore(configured.blobs_dir, max_bytes=configured.max_blob_bytes)
    except ValueError as exc:  # --blobs-dir names a file
        raise UsageError(str(exc)) from exc


def resolve_model_hash(client: LedgerClient, text: str) -> str:
    """A committed version's hash from a SHA-256 (0x optional) or the word `latest`."""
    from ledger.core.hashing import normalize_hash

    if text == "latest":
        from ledger.chain.rounds import latest_model_hash

        try:
            return latest_model_hash(client)
        except LookupError as exc:
            raise CommandError(str(exc)) from exc
    try:
        return normalize_hash(text)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{text!r} is not a model hash (64 hex digits) or `latest`: {exc}") from exc


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
    parser.add_argument("--alpha", type=positive_number, default=0.5, help="Dirichlet concentration for --non-iid")


def natural_number(text: str) -> int:
    """An integer >= 0 (argparse type), e.g. a round number: -1 is a usage error, not a chain call."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """A finite number above 0 (argparse type): nan, inf and 0 are refused as usage errors."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return value


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


def deployment_block(client: LedgerClient) -> int:
    """The block the ledger was deployed in (its deployment record's), else 0: where reading starts."""
    from ledger.chain.deploy import DeploymentNotFound, load_deployment

    try:
        record = load_deployment(client.w3)
    except DeploymentNotFound:
        return 0
    return record.block_number if record.address == client.address else 0
