"""`fedledger deploy`: put the contract on a chain and record where it went (var/deployments/)."""

from __future__ import annotations

import argparse
import json


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from ledger.cli.wiring import add_key_arguments

    parser = subparsers.add_parser("deploy", help="deploy the ledger contract and record it under var/deployments/")
    parser.add_argument("--rpc-url", default=None, help="JSON-RPC endpoint (default $FEDLEDGER_RPC_URL or the devnet)")
    add_key_arguments(parser, required=False)
    parser.add_argument(
        "--attestation-quorum",
        type=int,
        default=0,
        metavar="K",
        help="auditors' ok attestations a version needs before a round may build on it (0: off; at most 32)",
    )
    parser.add_argument("--json", action="store_true", help="print the deployment record as JSON")
    parser.set_defaults(handler=_deploy)


def _deploy(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ledger.chain.deploy import deploy, deployment_path
    from ledger.cli.errors import UsageError
    from ledger.cli.wiring import connect_chain, signing_account

    if not 0 <= args.attestation_quorum <= 255:  # the constructor takes a uint8 (and reverts above 32)
        raise UsageError(f"--attestation-quorum must be 0..32, got {args.attestation_quorum}")
    if args.keystore is None and args.dev_key is None:
        args.dev_key = 0  # the devnet's first account; the client refuses it on any other chain
    account = signing_account(args)
    w3 = connect_chain(args)
    client, record, result = deploy(w3, account, attestation_quorum=args.attestation_quorum)
    if args.json:
        print(json.dumps({**asdict(record), "gas_used": result.gas_used, "record": str(deployment_path(record.chain_id))}))
        return 0
    print(f"deployed FederatedLedger at {record.address} on chain {record.chain_id}")
    print(f"  block {record.block_number}, tx {record.tx_hash}, gas {result.gas_used}")
    print(f"  artifact sha256 {record.artifact_sha256}")
    print(f"  recorded in {deployment_path(record.chain_id)}")
    return 0
