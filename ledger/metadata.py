"""The JSON blob pinned beside every model version: how it was made and how good it is.

Pure: values in, canonical JSON bytes out. Its SHA-256 goes on chain in `ModelCommitted`, so the
chain itself says which rule (and parameters) built each version from which updates, and an
auditor can re-run exactly that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.serialization import canonical_json

FORMAT = "fedledger-model-metadata/1"


@dataclass(frozen=True)
class IncludedUpdate:
    update_hash: str
    node: str
    num_samples: int


@dataclass(frozen=True)
class RejectedUpdate:
    update_hash: str
    node: str
    reason_code: int
    reason: str


def genesis_metadata(*, architecture: str, seed: int) -> bytes:
    return canonical_json({"format": FORMAT, "kind": "genesis", "architecture": architecture, "seed": seed})


def round_metadata(
    *,
    round_number: int,
    base_model_hash: str,
    architecture: str,
    rule: str,
    rule_params: Mapping[str, Any],
    included: Sequence[IncludedUpdate],
    rejected: Sequence[RejectedUpdate],
    metrics: Mapping[str, float | int],
) -> bytes:
    """Updates are listed by hash, the order the rules combine them in."""
    return canonical_json(
        {
            "format": FORMAT,
            "kind": "round",
            "round": round_number,
            "base_model": base_model_hash,
            "architecture": architecture,
            "rule": {"name": rule, "params": dict(rule_params)},
            "included": [
                {"update_hash": u.update_hash, "node": u.node, "num_samples": u.num_samples}
                for u in sorted(included, key=lambda u: u.update_hash)
            ],
            "rejected": [
                {"update_hash": r.update_hash, "node": r.node, "reason_code": r.reason_code, "reason": r.reason}
                for r in sorted(rejected, key=lambda r: r.update_hash)
            ],
            "metrics": dict(metrics),
        }
    )
