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
    "node": Command("ledger.cli.node", "run an edge node"),
    "aggregator": Command("ledger.cli.aggregator", "run the aggregator (coordinator)"),
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
    parser = argparse.ArgumentParser(prog="fedledger", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
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
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = _command_word(arguments)
    if command not in COMMANDS:
        _overview_parser().parse_args(arguments)  # prints help or the usage error, and exits
        return 2
    args = build_parser(command).parse_args(arguments)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except CommandError as exc:
        print(f"fedledger: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
