"""The `fedledger` command: one entry point, each area adds its own subcommands.

Each area module exposes `add_commands(subparsers)`; handlers receive the parsed args and return
an exit code. Modules are imported only when the CLI is built, and heavy imports (torch, web3)
stay inside handlers so `fedledger --help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Modules that contribute subcommands, in the order `--help` lists them.
COMMAND_MODULES = (
    "ledger.contracts_cli",
    "ledger.devnet",
    "ledger.deploy",
    "ledger.walkthrough",
    "ledger.bench",
    "ledger.api.serve",
    "ledger.index.cli",
    "edge_node.cli",
    "aggregator.cli",
    "ledger.demo",
    "ledger.audit_cli",
)


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 1, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedledger", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except CommandError as exc:
        print(f"fedledger: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
