"""The `fedledger` command: a static table of subcommands, each loaded only when it is asked for.

`fedledger --help` imports nothing but this table; `fedledger devnet status` imports only the
devnet module. Each command module exposes `add_commands(subparsers)`; handlers receive the
parsed args and return an exit code. Heavy imports (torch, web3, sqlalchemy) stay inside handlers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NamedTuple

from ledger.cli.errors import CommandError


class Command(NamedTuple):
    module: str
    help: str


# In the order `--help` lists them.
COMMANDS: dict[str, Command] = {
    "contracts": Command("ledger.cli.contracts", "build or check the compiled contract artifact"),
    "devnet": Command("ledger.cli.devnet", "start, stop, inspect or reset the local anvil chain"),
    "deploy": Command("ledger.cli.deploy", "deploy the ledger contract and record it under var/deployments/"),
    "walkthrough": Command("ledger.cli.walkthrough", "walk one round of the contract with placeholder hashes"),
    "api": Command("ledger.cli.api", "the ledger service: blob store, audit API and page"),
    "db": Command("ledger.cli.index", "migrate the SQL index's schema (Alembic)"),
    "index": Command("ledger.cli.index", "mirror the ledger's events into the SQL index"),
    "node": Command("ledger.cli.node", "run an edge node; list, register or revoke nodes"),
    "aggregator": Command("ledger.cli.aggregator", "run the aggregator (coordinator)"),
    "round": Command("ledger.cli.rounds", "show a round's state, or abandon one after its deadline"),
    "versions": Command("ledger.cli.versions", "the committed model versions, genesis first"),
    "keys": Command("ledger.cli.keys", "create an encrypted keystore for a new account"),
    "task": Command("ledger.cli.task", "list, show or create tasks (the model, data and training a federation pins)"),
    "data": Command("ledger.cli.data", "write per-node data files from a task's bundled data set"),
    "demo": Command("ledger.cli.demo", "run a federated training demo end to end"),
    "audit": Command("ledger.cli.audit", "check committed model versions against the chain"),
    "export": Command("ledger.cli.export", "a committed version as ONNX/safetensors with signed provenance; verify one"),
    "keys": Command("ledger.cli.keys", "create a signing key pair for exports (--signing)"),
    "bench": Command("ledger.cli.bench.common", "run a benchmark and print its figures as JSON"),
}

DESCRIPTION = "Blockchain-audited federated training: every update and global model pinned by SHA-256 on chain."


def _base_parser() -> argparse.ArgumentParser:
    from ledger.cli.logs import FORMATS

    parser = argparse.ArgumentParser(prog="fedledger", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    # Both are taken from anywhere on the command line (see ledger.cli.logs.extract_options).
    parser.add_argument("-q", "--quiet", action="store_true", help="print no progress lines (results and errors still)")
    parser.add_argument(
        "--log-format", choices=FORMATS, default="text", help="progress as human lines (text) or JSON lines (json)"
    )
    return parser


def _overview_parser() -> argparse.ArgumentParser:
    """Lists every command from the table alone; parses just enough to find the command word."""
    parser = _base_parser()
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        subparsers.add_parser(name, help=command.help, add_help=False)
    return parser


def build_parser(command: str) -> argparse.ArgumentParser:
    """The full parser for one command: only that command's module is imported."""
    parser = _base_parser()
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    importlib.import_module(COMMANDS[command].module).add_commands(subparsers)
    return parser


def _command_word(argv: Sequence[str]) -> str | None:
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    from ledger.cli.logs import extract_options, setup_logging

    arguments, quiet, log_format = extract_options(list(sys.argv[1:] if argv is None else argv))
    command = _command_word(arguments)
    if command not in COMMANDS:
        _overview_parser().parse_args(arguments)  # prints help or the usage error, and exits
        return 2
    args = build_parser(command).parse_args(arguments)
    setup_logging(quiet=quiet, log_format=log_format, verbose=args.verbose)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        failure = as_command_error(exc)
        if failure is None:
            raise
        print(f"fedledger: error: {failure}", file=sys.stderr)
        return failure.exit_code


def as_command_error(exc: BaseException) -> CommandError | None:
    """The one-line failure an exception stands for, or None for a bug (which keeps its traceback).

    fedledger's own errors are named for the user: an unreachable chain or store exits 3, a
    contract refusal, a bad record or a store refusal exits 1.
    """
    from ledger.cli.errors import DependencyUnavailable, UsageError
    from ledger.core.errors import LedgerError, Unavailable

    if isinstance(exc, CommandError):
        return exc
    if isinstance(exc, Unavailable):
        return DependencyUnavailable(str(exc))
    if isinstance(exc, LedgerError):
        return CommandError(str(exc))
    store_base = sys.modules.get("ledger.store.base")
    devnet = sys.modules.get("ledger.chain.devnet")
    if store_base is not None and isinstance(exc, store_base.BlobStoreError):
        return CommandError(str(exc))
    if devnet is not None and isinstance(exc, devnet.DevnetError):
        return CommandError(str(exc))
    database = sys.modules.get("sqlalchemy.exc")
    if database is not None and isinstance(exc, database.ArgumentError):  # an unparsable --database-url
        return UsageError(f"the index database URL is not usable: {exc}")
    if database is not None and isinstance(exc, database.OperationalError):  # the database does not answer
        return DependencyUnavailable(f"the index database is unavailable: {str(exc).splitlines()[0]}")
    return None
