"""The one configuration object: where the chain, the contract, the blobs and the index live.

Values come from keyword arguments (command-line flags), then FEDLEDGER_* environment variables,
then defaults. Runtime state lives in `$FEDLEDGER_HOME`, else `./var` of the current directory:
never in the source tree or site-packages, so an installed wheel works from any folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_RPC_URL = "http://127.0.0.1:8545"
DEFAULT_MAX_BLOB_BYTES = 512 * 1024 * 1024

# The source checkout this package runs from, if any (None for an installed wheel): the toolchain
# that `make setup` installs (anvil, forge, solc-js) lives in its hardhat-free-devnet/.
_PACKAGE_PARENT = Path(__file__).resolve().parent.parent
SOURCE_CHECKOUT: Path | None = _PACKAGE_PARENT if (_PACKAGE_PARENT / "hardhat-free-devnet").is_dir() else None


def home_dir() -> Path:
    """Runtime state root: $FEDLEDGER_HOME, else ./var of the working directory."""
    configured = os.environ.get("FEDLEDGER_HOME")
    return Path(configured) if configured else Path.cwd() / "var"


def devnet_toolchain_dirs() -> list[Path]:
    """Where `make setup` puts anvil, forge and solc-js: the checkout's, then the working directory's."""
    candidates = [SOURCE_CHECKOUT / "hardhat-free-devnet"] if SOURCE_CHECKOUT else []
    candidates.append(Path.cwd() / "hardhat-free-devnet")
    return list(dict.fromkeys(path for path in candidates if path.is_dir()))


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    rpc_url: str = field(default_factory=lambda: os.environ.get("FEDLEDGER_RPC_URL", DEFAULT_RPC_URL))
    contract_address: str | None = field(default_factory=lambda: os.environ.get("FEDLEDGER_CONTRACT") or None)
    blobs_dir: Path = field(default_factory=lambda: Path(os.environ.get("FEDLEDGER_BLOBS_DIR", home_dir() / "blobs")))
    database_url: str = field(
        default_factory=lambda: os.environ.get("FEDLEDGER_DATABASE_URL", f"sqlite:///{home_dir() / 'index.sqlite'}")
    )
    max_blob_bytes: int = field(default_factory=lambda: _env_int("FEDLEDGER_MAX_BLOB_BYTES", DEFAULT_MAX_BLOB_BYTES))

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the non-None `changes` applied (CLI flags override env and defaults)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
