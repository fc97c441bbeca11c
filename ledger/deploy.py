"""`fedledger deploy`: put the committed artifact on a chain and record where it went.

The record (var/deployments/<chainId>.json) holds the address, chain id, block and the artifact's
SHA-256; loading it re-checks that the code on chain is still the artifact's runtime bytecode, so a
reset devnet gives a clear "deploy again" instead of calls into an empty address.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.artifact import load_artifact
from ledger.client import LedgerClient, TxResult
from ledger.errors import LedgerError
from ledger.paths import var_dir


class DeploymentNotFound(LedgerError):
    """No usable deployment record for this chain."""


@dataclass(frozen=True)
class Deployment:
    address: str
    chain_id: int
    block_number: int
    tx_hash: str
    deployer: str
    artifact_sha256: str
    compiler_version: str


def deployment_path(chain_id: int) -> Path:
    return var_dir() / "deployments" / f"{chain_id}.json"


def deploy(w3: Web3, account: LocalAccount) -> tuple[LedgerClient, Deployment, TxResult]:
    """Deploy and write the deployment record for the chain."""
    client, result = LedgerClient.deploy(w3, account)
    artifact = load_artifact()
    record = Deployment(
        address=client.address,
        chain_id=client.chain_id,
        block_number=result.block_number,
        tx_hash=result.tx_hash,
        deployer=account.address,
        artifact_sha256=artifact.artifact_sha256,
        compiler_version=artifact.compiler_version,
    )
    path = deployment_path(client.chain_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return client, record, result


def load_deployment(w3: Web3) -> Deployment:
    """The recorded deployment for the connected chain, checked against the code on chain."""
    chain_id = int(w3.eth.chain_id)
    path = deployment_path(chain_id)
    if not path.exists():
        raise DeploymentNotFound(f"no deployment recorded for chain {chain_id} ({path}): run `fedledger deploy`")
    record = Deployment(**json.loads(path.read_text(encoding="utf-8")))
    code = bytes(w3.eth.get_code(Web3.to_checksum_address(record.address)))
    expected = bytes.fromhex(load_artifact().deployed_bytecode[2:])
    if code != expected:
        state = "no code" if not code else "different code"
        raise DeploymentNotFound(
            f"chain {chain_id} has {state} at the recorded address {record.address} "
            "(was the devnet reset?): run `fedledger deploy` again"
        )
    return record


def add_chain_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that talks to a chain shares."""
    parser.add_argument("--rpc-url", default=None, help="JSON-RPC endpoint (default: the devnet on 127.0.0.1:8545)")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--keystore", type=Path, help="encrypted keystore; password in $FEDLEDGER_KEYSTORE_PASSWORD")
    keys.add_argument("--dev-key", type=int, metavar="INDEX", help="anvil dev account INDEX (devnet only)")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("deploy", help="deploy the ledger contract and record it under var/deployments/")
    add_chain_arguments(parser)
    parser.set_defaults(handler=_deploy)


def _deploy(args: argparse.Namespace) -> int:
    from ledger.chain import DEFAULT_RPC_URL, connect
    from ledger.cli import CommandError
    from ledger.keys import resolve_account

    dev_key = args.dev_key if args.keystore is not None or args.dev_key is not None else 0
    try:
        w3 = connect(args.rpc_url or DEFAULT_RPC_URL)
        account = resolve_account(keystore=args.keystore, dev_key_index=None if args.keystore else dev_key)
        client, record, result = deploy(w3, account)
    except LedgerError as exc:
        raise CommandError(str(exc)) from exc
    print(f"deployed FederatedLedger at {record.address} on chain {record.chain_id}")
    print(f"  block {record.block_number}, tx {record.tx_hash}, gas {result.gas_used}")
    print(f"  artifact sha256 {record.artifact_sha256}")
    print(f"  recorded in {deployment_path(record.chain_id)}")
    return 0
