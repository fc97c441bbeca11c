"""Merkle root and inclusion proofs over update hashes, bit-for-bit what `verifyInclusion` checks.

The aggregator commits the set of updates it merged as one bytes32 root, so finalizing costs the
same gas for 5 nodes or 5,000, and any node can prove its update was included.

Tree shape (FederatedLedger.sol): leaves are the distinct update hashes in ascending order,
each hashed as sha256(0x00 ‖ h); a parent is sha256(0x01 ‖ min(a, b) ‖ max(a, b)) over
consecutive pairs; an odd last node is carried up unchanged. The 0x00/0x01 domain bytes stop a
leaf passing as an inner node, and sorted pairs mean a proof needs no left/right bits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from ledger.core.hashing import HASH_BYTES

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def merkle_root(hashes: Iterable[bytes]) -> bytes:
    """Root over the distinct `hashes` (bytes32 each); input order and duplicates do not matter."""
    return _levels(_leaves(hashes))[-1][0]


def merkle_proof(hashes: Iterable[bytes], leaf: bytes) -> list[bytes]:
    """Sibling nodes, bottom-up, proving `leaf` is under `merkle_root(hashes)`.

    Levels where the leaf's ancestor is the carried odd node contribute no sibling, exactly as
    the contract's loop expects.
    """
    leaves = _leaves(hashes)
    try:
        index = leaves.index(leaf)
    except ValueError:
        raise ValueError(f"{leaf.hex()} is not among the hashes") from None
    proof: list[bytes] = []
    for level in _levels(leaves)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def verify_proof(root: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
    """Whether `proof` links `leaf` to `root`; a Python twin of the contract's `verifyInclusion`."""
    if not all(_is_bytes32(item) for item in (root, leaf, *proof)):
        return False
    node = _hash_leaf(leaf)
    for sibling in proof:
        node = _hash_pair(node, sibling)
    return node == root


def _leaves(hashes: Iterable[bytes]) -> list[bytes]:
    """The sorted distinct leaves; bytes order equals the contract's uint256 order for bytes32."""
    distinct = set()
    for item in hashes:
        if not _is_bytes32(item):
            raise ValueError(f"Merkle leaves must be {HASH_BYTES}-byte hashes, got {item!r}")
        distinct.add(bytes(item))
    if not distinct:
        raise ValueError("a Merkle root needs at least one hash")
    return sorted(distinct)


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every level of the tree, from hashed leaves up to the single root."""
    levels = [[_hash_leaf(leaf) for leaf in leaves]]
    while len(levels[-1]) > 1:
        level = levels[-1]
        parents = [_hash_pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            parents.append(level[-1])
        levels.append(parents)
    return levels


def _hash_leaf(update_hash: bytes) -> bytes:
    return hashlib.sha256(_LEAF_PREFIX + update_hash).digest()


def _hash_pair(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(_NODE_PREFIX + min(a, b) + max(a, b)).digest()


def _is_bytes32(item: object) -> bool:
    return isinstance(item, (bytes, bytearray)) and len(item) == HASH_BYTES
