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
    compiler_version: str
    source: str
    source_sha256: str
    artifact_sha256: str
    immutable_references: tuple[tuple[int, int], ...] = ()  # (start, length) in the runtime code

    def abi_items(self, kind: str) -> list[dict[str, Any]]:
        return [item for item in self.abi if item.get("type") == kind]

    def is_deployed_code(self, code: bytes) -> bool:
        """Whether `code` (read from a chain) is this artifact's runtime code, whatever its immutables."""
        expected = bytearray(bytes.fromhex(self.deployed_bytecode.removeprefix("0x")))
        if len(code) != len(expected):
            return False
        actual = bytearray(code)
        for start, length in self.immutable_references:
            expected[start : start + length] = actual[start : start + length]
        return bytes(actual) == bytes(expected)


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
        compiler_version=data["compiler"]["version"],
        source=data["source"],
        source_sha256=data["sourceSha256"],
        artifact_sha256=hashlib.sha256(raw).hexdigest(),
        immutable_references=tuple((int(start), int(length)) for start, length in data.get("immutableReferences", [])),
    )
