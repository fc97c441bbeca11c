"""The one configuration object: where the chain, the contract, the blobs and the index live.

Values come from keyword arguments, then FEDLEDGER_* environment variables, then defaults under
var/. The contract address, when not given, is read from var/deployments/<chainId>.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ledger.paths import var_dir

DEFAULT_RPC_URL = "http://127.0.0.1:8545"
DEFAULT_MAX_ARTIFACT_BYTES = 512 * 1024 * 1024


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    rpc_url: str = field(default_factory=lambda: os.environ.get("FEDLEDGER_RPC_URL", DEFAULT_RPC_URL))
    contract_address: str | None = field(default_factory=lambda: os.environ.get("FEDLEDGER_CONTRACT") or None)
    artifacts_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("FEDLEDGER_ARTIFACTS_DIR", var_dir() / "artifacts"))
    )
    database_url: str = field(
        default_factory=lambda: os.environ.get("FEDLEDGER_DATABASE_URL", f"sqlite:///{var_dir() / 'index.sqlite'}")
    )
    max_artifact_bytes: int = field(
        default_factory=lambda: _env_int("FEDLEDGER_MAX_ARTIFACT_BYTES", DEFAULT_MAX_ARTIFACT_BYTES)
    )

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the non-None `changes` applied (CLI flags override env and defaults)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
