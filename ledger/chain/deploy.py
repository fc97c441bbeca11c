"""Deploying the ledger contract and the record of where it went (read back by every command).

The record (var/deployments/<chainId>.json) holds the address, chain id, block and the artifact's
SHA-256; loading it re-checks that the code on chain is still the artifact's runtime bytecode, so a
reset devnet gives a clear "deploy again" instead of calls into an empty address.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.chain.artifact import load_artifact
from ledger.chain.client import LedgerClient, TxResult
from ledger.core.errors import LedgerError
from ledger.config import home_dir


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
    return home_dir() / "deployments" / f"{chain_id}.json"


def deploy(w3: Web3, account: LocalAccount, *, attestation_quorum: int = 0) -> tuple[LedgerClient, Deployment, TxResult]:
    """Deploy and write the deployment record for the chain."""
    client, result = LedgerClient.deploy(w3, account, attestation_quorum=attestation_quorum)
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
    if not load_artifact().is_runtime_code(code):
        state = "no code" if not code else "different code"
        raise DeploymentNotFound(
            f"chain {chain_id} has {state} at the recorded address {record.address} "
            "(was the devnet reset?): run `fedledger deploy` again"
        )
    return record
