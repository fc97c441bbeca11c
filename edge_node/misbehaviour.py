"""Demo-only misbehaving nodes, so the demo and tests can show the aggregator catching them.

`tamper_at_rest` alters the node's blob in the store's folder before the chain records its hash;
`poison_transform` submits NaN weights in odd rounds and hugely scaled weights in even ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from ledger.store.local import LocalBlobStore

POISON_SCALE = 1.0e4


def tamper_at_rest(blobs_dir: Path) -> Callable[[str, bytes], None]:
    """Once stored, flip one byte of the blob on disk, as an attacker with disk access would."""

    def tamper(update_hash: str, blob: bytes) -> None:
        path = LocalBlobStore(blobs_dir, max_bytes=len(blob) + 1).path_for(update_hash)
        altered = bytearray(blob)
        altered[-1] ^= 0xFF
        path.write_bytes(bytes(altered))

    return tamper


def poison_transform() -> Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]:
    calls = {"count": 0}

    def poison(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        calls["count"] += 1
        if calls["count"] % 2 == 1:
            first = sorted(weights)[0]
            poisoned = {name: tensor.clone() for name, tensor in weights.items()}
            poisoned[first].view(-1)[0] = float("nan")
            return poisoned
        return {name: tensor * POISON_SCALE for name, tensor in weights.items()}

    return poison
