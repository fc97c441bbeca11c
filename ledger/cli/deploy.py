"""`fedledger deploy`: put the contract on a chain and record where it went (var/deployments/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ledger.chain.deploy import deploy, deployment_path
from ledger.core.errors import LedgerError


def add_chain_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that talks to a chain shares."""
    parser.add_argument("--rpc-url", default=None, help="JSON-RPC endpoint (default $FEDLEDGER_RPC_URL or the devnet on 127.0.0.1:8545)")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--keystore", type=Path, help="encrypted keystore; password in $FEDLEDGER_KEYSTORE_PASSWORD")
    keys.add_argument("--dev-key", type=int, metavar="INDEX", help="anvil dev account INDEX (devnet only)")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("deploy", help="deploy the ledger contract and record it under var/deployments/")
    add_chain_arguments(parser)
    parser.add_argument(
        "--attestation-quorum",
        type=int,
        default=0,
        metavar="K",
        help="auditors' ok attestations a version needs before a round may build on it (0: off; at most 32)",
    )
    parser.set_defaults(handler=_deploy)


def _deploy(args: argparse.Namespace) -> int:
    from ledger.chain.connect import connect
    from ledger.config import Settings
    from ledger.cli.errors import CommandError
    from ledger.chain.keys import resolve_account

    dev_key = args.dev_key if args.keystore is not None or args.dev_key is not None else 0
    try:
        w3 = connect(Settings().with_overrides(rpc_url=args.rpc_url).rpc_url)
        account = resolve_account(keystore=args.keystore, dev_key_index=None if args.keystore else dev_key)
        client, record, result = deploy(w3, account, attestation_quorum=args.attestation_quorum)
    except LedgerError as exc:
        raise CommandError(str(exc)) from exc
    print(f"deployed FederatedLedger at {record.address} on chain {record.chain_id}")
    print(f"  block {record.block_number}, tx {record.tx_hash}, gas {result.gas_used}")
    print(f"  artifact sha256 {record.artifact_sha256}")
    print(f"  recorded in {deployment_path(record.chain_id)}")
    return 0
