"""Loads the committed contract artifact: the one place that knows the ABI and bytecode."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ledger.paths import ARTIFACT_PATH


@dataclass(frozen=True)
class ContractArtifact:
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str
    source_sha256: str
    artifact_sha256: str

    def abi_items(self, kind: str) -> list[dict[str, Any]]:
        return [item for item in self.abi if item.get("type") == kind]


@lru_cache(maxsize=4)
def load_artifact(path: Path = ARTIFACT_PATH) -> ContractArtifact:
    """Read the artifact; tests and deployments never need a compiler for this."""
    raw = path.read_bytes()
    data = json.loads(raw)
    return ContractArtifact(
        abi=data["abi"],
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        compiler_version=data["compiler"]["version"],
        source_sha256=data["sourceSha256"],
        artifact_sha256=hashlib.sha256(raw).hexdigest(),
    )
