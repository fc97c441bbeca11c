"""Where the project's files and its runtime state live (runtime state is under var/, git-ignored)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONTRACT_SOURCE = PROJECT_ROOT / "contracts" / "FederatedLedger.sol"
ARTIFACT_PATH = PROJECT_ROOT / "contracts" / "build" / "FederatedLedger.json"
DEVNET_DIR = PROJECT_ROOT / "hardhat-free-devnet"
SOLC_SHIM = DEVNET_DIR / "solc"


def var_dir() -> Path:
    """Runtime state root; FEDLEDGER_VAR moves it (tests point it at a temp dir)."""
    return Path(os.environ.get("FEDLEDGER_VAR", PROJECT_ROOT / "var"))
