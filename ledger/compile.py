"""Compiles contracts/FederatedLedger.sol into the committed artifact, reproducibly and offline.

The artifact (ABI, bytecode, compiler version, settings, source SHA-256) is what every other part
loads; a compiler is needed only to regenerate it, and a test proves a fresh compile is
byte-identical to the committed file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ledger.paths import ARTIFACT_PATH, CONTRACT_SOURCE, PROJECT_ROOT, SOLC_SHIM

CONTRACT_NAME = "FederatedLedger"
SOURCE_KEY = "contracts/FederatedLedger.sol"

# Fixed settings: prague is what py-evm (in-process chain) and anvil both run; solc-js would
# otherwise default to osaka.
COMPILER_SETTINGS: dict[str, Any] = {
    "evmVersion": "prague",
    "optimizer": {"enabled": True, "runs": 10_000},
    "metadata": {"bytecodeHash": "ipfs"},
    "outputSelection": {
        "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "storageLayout"]}
    },
}


class CompilerNotFound(RuntimeError):
    """No solc could be resolved; the message says how to get one."""


def resolve_solc() -> Path:
    """Pick the compiler: $FEDLEDGER_SOLC, then a native `solc` on PATH, then the solc-js shim."""
    configured = os.environ.get("FEDLEDGER_SOLC")
    if configured:
        path = Path(configured)
        if not path.exists():
            raise CompilerNotFound(f"FEDLEDGER_SOLC points at {path}, which does not exist")
        return path
    native = shutil.which("solc")
    if native:
        return Path(native)
    if SOLC_SHIM.exists() and (SOLC_SHIM.parent / "node_modules" / "solc").exists():
        return SOLC_SHIM
    raise CompilerNotFound(
        "no Solidity compiler found: run `make setup` (installs solc-js under hardhat-free-devnet/), "
        "install a native solc, or set FEDLEDGER_SOLC"
    )


def source_sha256(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()


def standard_input(source: str) -> dict[str, Any]:
    return {
        "language": "Solidity",
        "sources": {SOURCE_KEY: {"content": source}},
        "settings": COMPILER_SETTINGS,
    }


def compile_artifact(solc_binary: Path | None = None) -> dict[str, Any]:
    """Compile the contract and return the artifact dict (no file written)."""
    import solcx
    import solcx.wrapper  # imported here so loading the artifact never needs py-solc-x's machinery

    binary = solc_binary or resolve_solc()
    source_bytes = CONTRACT_SOURCE.read_bytes()
    output = solcx.compile_standard(
        standard_input(source_bytes.decode("utf-8")),
        solc_binary=binary,
        allow_paths=str(PROJECT_ROOT),
    )
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise RuntimeError("solc failed:\n" + "\n".join(e["formattedMessage"] for e in errors))
    contract = output["contracts"][SOURCE_KEY][CONTRACT_NAME]
    version = solcx.wrapper.get_version_str_from_solc_binary(binary)
    return {
        "contractName": CONTRACT_NAME,
        "sourcePath": SOURCE_KEY,
        "sourceSha256": source_sha256(source_bytes),
        "compiler": {"version": version, "settings": COMPILER_SETTINGS},
        "abi": contract["abi"],
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
    }


def render_artifact(artifact: dict[str, Any]) -> str:
    """The one serialization of the artifact, so rebuilds compare byte for byte."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def build(path: Path = ARTIFACT_PATH, solc_binary: Path | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_artifact(compile_artifact(solc_binary)), encoding="utf-8")
    return path
