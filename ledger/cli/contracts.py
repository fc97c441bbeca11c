"""`fedledger contracts build|check`: regenerate or re-prove the packaged contract artifact."""

from __future__ import annotations

import argparse


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    contracts = subparsers.add_parser("contracts", help="build or check the compiled contract artifact")
    sub = contracts.add_subparsers(dest="contracts_command", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="compile contracts/ and rewrite ledger/chain/FederatedLedger.json (a checkout)")
    build.set_defaults(handler=_build)
    check = sub.add_parser(
        "check", help="fail unless a fresh compile of the source is byte-identical to the packaged artifact"
    )
    check.set_defaults(handler=_check)


def _build(args: argparse.Namespace) -> int:
    from ledger.chain.compile import CompilerNotFound, build
    from ledger.cli.errors import DependencyUnavailable

    try:
        path = build()
    except CompilerNotFound as exc:
        raise DependencyUnavailable(str(exc)) from exc
    print(f"wrote {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ledger.chain.artifact import artifact_bytes, load_artifact
    from ledger.chain.compile import CHECKOUT_SOURCE, CompilerNotFound, compile_artifact, render_artifact, source_sha256
    from ledger.cli.errors import CommandError, DependencyUnavailable

    artifact = load_artifact()
    if source_sha256(artifact.source.encode("utf-8")) != artifact.source_sha256:
        raise CommandError("the packaged artifact's source does not match its recorded SHA-256: reinstall fedledger")
    try:
        fresh = render_artifact(compile_artifact())
    except CompilerNotFound as exc:
        raise DependencyUnavailable(str(exc)) from exc
    source = CHECKOUT_SOURCE if CHECKOUT_SOURCE is not None and CHECKOUT_SOURCE.exists() else "its embedded source"
    if fresh.encode("utf-8") != artifact_bytes():
        raise CommandError(f"the packaged artifact differs from a fresh compile of {source}: run `fedledger contracts build`")
    print(f"contract artifact {artifact.artifact_sha256[:16]}… matches a fresh compile of {source}")
    return 0
