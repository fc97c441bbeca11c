"""Loads the contract artifact (ABI, bytecode, source): the one place that knows the contract's shape.

The artifact ships inside the package (`ledger/chain/FederatedLedger.json`, read through
importlib.resources), so an installed wheel needs neither the repository nor a compiler. It is
generated from `contracts/FederatedLedger.sol` by `fedledger contracts build`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

ARTIFACT_NAME = "FederatedLedger.json"


@dataclass(frozen=True)
class ContractArtifact:
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    immutable_ranges: tuple[tuple[int, int], ...]  # (start, length) in the runtime code
    compiler_version: str
    source: str
    source_sha256: str
    artifact_sha256: str

    def abi_items(self, kind: str) -> list[dict[str, Any]]:
        return [item for item in self.abi if item.get("type") == kind]

    def is_runtime_code(self, code: bytes) -> bool:
        """Whether `code` (from `eth_getCode`) is this contract, whatever its constructor set as immutables."""
        expected = bytearray(bytes.fromhex(self.deployed_bytecode[2:]))
        if len(code) != len(expected):
            return False
        masked = bytearray(code)
        for start, length in self.immutable_ranges:
            masked[start : start + length] = expected[start : start + length]
        return bytes(masked) == bytes(expected)


def artifact_bytes() -> bytes:
    """The packaged artifact's bytes, exactly as committed."""
    return resources.files("ledger.chain").joinpath(ARTIFACT_NAME).read_bytes()


@lru_cache(maxsize=1)
def load_artifact() -> ContractArtifact:
    """Read the packaged artifact; tests and deployments never need a compiler for this."""
    raw = artifact_bytes()
    data = json.loads(raw)
    return ContractArtifact(
        abi=data["abi"],
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        immutable_ranges=tuple(
            sorted((int(ref["start"]), int(ref["length"])) for refs in data["immutableReferences"].values() for ref in refs)
        ),
        compiler_version=data["compiler"]["version"],
        source=data["source"],
        source_sha256=data["sourceSha256"],
        artifact_sha256=hashlib.sha256(raw).hexdigest(),
    )
