"""`fedledger contracts build|check`: regenerate or verify the committed contract artifact."""

from __future__ import annotations

import argparse

from ledger.paths import ARTIFACT_PATH


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    contracts = subparsers.add_parser("contracts", help="build or check the compiled contract artifact")
    sub = contracts.add_subparsers(dest="contracts_command", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="compile contracts/ and rewrite contracts/build/FederatedLedger.json")
    build.set_defaults(handler=_build)
    check = sub.add_parser("check", help="fail if a fresh compile differs from the committed artifact")
    check.set_defaults(handler=_check)


def _build(args: argparse.Namespace) -> int:
    from ledger.compile import build

    path = build()
    print(f"wrote {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ledger.cli import CommandError
    from ledger.compile import compile_artifact, render_artifact

    fresh = render_artifact(compile_artifact())
    if fresh != ARTIFACT_PATH.read_text(encoding="utf-8"):
        raise CommandError(f"{ARTIFACT_PATH} is stale: run `fedledger contracts build` and commit it")
    print(f"{ARTIFACT_PATH} matches a fresh compile")
    return 0
