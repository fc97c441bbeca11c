"""Compiles contracts/FederatedLedger.sol into the packaged contract artifact, reproducibly and offline.

The artifact (ABI, bytecode, compiler version, settings, the source and its SHA-256) is what every
other part loads; a compiler is needed only to regenerate or re-check it, and a test proves a fresh
compile is byte-identical to the committed file. Outside a source checkout, the source embedded in
the artifact is what gets recompiled, so an installed wheel can still prove its own bytecode.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ledger.config import SOURCE_CHECKOUT, devnet_toolchain_dirs

CONTRACT_NAME = "FederatedLedger"
SOURCE_KEY = "contracts/FederatedLedger.sol"
# Where `contracts build` writes: the package folder of a source checkout (None in a wheel).
CHECKOUT_SOURCE = SOURCE_CHECKOUT / SOURCE_KEY if SOURCE_CHECKOUT else None
CHECKOUT_ARTIFACT = SOURCE_CHECKOUT / "ledger" / "chain" / "FederatedLedger.json" if SOURCE_CHECKOUT else None

# Fixed settings: prague is what py-evm (in-process chain) and anvil both run; solc-js would
# otherwise default to osaka.
COMPILER_SETTINGS: dict[str, Any] = {
    "evmVersion": "prague",
    "optimizer": {"enabled": True, "runs": 10_000},
    "metadata": {"bytecodeHash": "ipfs"},
    "outputSelection": {
        "*": {
            "*": [
                "abi",
                "evm.bytecode.object",
                "evm.deployedBytecode.object",
                "evm.deployedBytecode.immutableReferences",
                "storageLayout",
            ]
        }
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
    for folder in devnet_toolchain_dirs():
        shim = folder / "solc"
        if shim.exists() and (folder / "node_modules" / "solc").exists():
            return shim
    raise CompilerNotFound(
        "no Solidity compiler found: set FEDLEDGER_SOLC, install a native solc, "
        "or run `make setup` in a fedledger checkout (solc-js under hardhat-free-devnet/)"
    )


def contract_source() -> str:
    """The source to compile: the checkout's contracts/ if there is one, else the artifact's own copy."""
    if CHECKOUT_SOURCE is not None and CHECKOUT_SOURCE.exists():
        return CHECKOUT_SOURCE.read_text(encoding="utf-8")
    from ledger.chain.artifact import load_artifact

    return load_artifact().source


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
    source = contract_source()
    output = solcx.compile_standard(standard_input(source), solc_binary=binary)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise RuntimeError("solc failed:\n" + "\n".join(e["formattedMessage"] for e in errors))
    contract = output["contracts"][SOURCE_KEY][CONTRACT_NAME]
    version = solcx.wrapper.get_version_str_from_solc_binary(binary)
    return {
        "contractName": CONTRACT_NAME,
        "sourcePath": SOURCE_KEY,
        "source": source,
        "sourceSha256": source_sha256(source.encode("utf-8")),
        "compiler": {"version": version, "settings": COMPILER_SETTINGS},
        "abi": contract["abi"],
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
        # Where the constructor writes immutables (the quorum, the EIP-712 domain) into the runtime code.
        "immutableReferences": contract["evm"]["deployedBytecode"].get("immutableReferences", {}),
    }


def render_artifact(artifact: dict[str, Any]) -> str:
    """The one serialization of the artifact, so rebuilds compare byte for byte."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def build(solc_binary: Path | None = None) -> Path:
    """Rewrite the checkout's packaged artifact from contracts/ (a source checkout only)."""
    if CHECKOUT_ARTIFACT is None:
        raise CompilerNotFound("`contracts build` rewrites a source checkout's artifact; this is an installed package")
    CHECKOUT_ARTIFACT.write_text(render_artifact(compile_artifact(solc_binary)), encoding="utf-8")
    return CHECKOUT_ARTIFACT
