"""Merkle roots and proofs over update hashes, checked against trees built by hand with hashlib."""

from __future__ import annotations

import hashlib
import math
import random

import pytest

from ledger.core.merkle import merkle_proof, merkle_root, verify_proof


def _h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def _leaf(update_hash: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + update_hash).digest()


def _pair(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + min(a, b) + max(a, b)).digest()


HASHES = [_h(f"update-{i}") for i in range(17)]


def test_one_leaf_root_is_the_hashed_leaf_with_an_empty_proof() -> None:
    assert merkle_root([HASHES[0]]) == _leaf(HASHES[0])
    assert merkle_proof([HASHES[0]], HASHES[0]) == []


def test_three_leaves_match_a_hand_built_tree() -> None:
    # Prepare: sorted leaves a < b < c; (a, b) pair up, c is carried to the next level.
    a, b, c = sorted(HASHES[:3])
    expected_root = _pair(_pair(_leaf(a), _leaf(b)), _leaf(c))

    # Execute
    root = merkle_root([c, a, b])

    # Assert
    assert root == expected_root
    assert merkle_proof([a, b, c], a) == [_leaf(b), _leaf(c)]
    assert merkle_proof([a, b, c], c) == [_pair(_leaf(a), _leaf(b))]


def test_five_leaves_carry_the_odd_node_up_two_levels() -> None:
    a, b, c, d, e = sorted(HASHES[:5])
    expected_root = _pair(_pair(_pair(_leaf(a), _leaf(b)), _pair(_leaf(c), _leaf(d))), _leaf(e))

    assert merkle_root(HASHES[:5]) == expected_root
    assert merkle_proof(HASHES[:5], e) == [_pair(_pair(_leaf(a), _leaf(b)), _pair(_leaf(c), _leaf(d)))]


@pytest.mark.parametrize("size", range(1, 18))
def test_every_leaf_has_a_valid_short_proof(size: int) -> None:
    hashes = HASHES[:size]
    root = merkle_root(hashes)

    for leaf in hashes:
        proof = merkle_proof(hashes, leaf)
        assert verify_proof(root, leaf, proof)
        assert len(proof) <= math.ceil(math.log2(size))


@pytest.mark.parametrize("size", [2, 7, 16, 17])
def test_tampering_with_leaf_proof_or_root_fails(size: int) -> None:
    hashes = HASHES[:size]
    root = merkle_root(hashes)
    leaf = hashes[size // 2]
    proof = merkle_proof(hashes, leaf)
    flipped = bytes([proof[0][0] ^ 1]) + proof[0][1:]

    assert not verify_proof(root, _h("not an update"), proof)
    assert not verify_proof(root, leaf, [flipped, *proof[1:]])
    assert not verify_proof(root, leaf, proof[:-1])
    assert not verify_proof(_h("other root"), leaf, proof)


def test_a_leaf_hash_cannot_pass_as_an_inner_node() -> None:
    a, b = sorted(HASHES[:2])

    assert not verify_proof(merkle_root([a, b]), _pair(_leaf(a), _leaf(b)), [])


def test_input_order_and_duplicates_do_not_change_the_root() -> None:
    shuffled = HASHES[:]
    random.Random(7).shuffle(shuffled)

    assert merkle_root(shuffled) == merkle_root(HASHES)
    assert merkle_root(HASHES + HASHES[:5]) == merkle_root(HASHES)


def test_malformed_proof_items_verify_false_rather_than_raise() -> None:
    assert not verify_proof(merkle_root(HASHES[:2]), HASHES[0], [b"short"])


@pytest.mark.parametrize("hashes", [[], [b"\x00" * 31], ["00" * 32]])
def test_empty_or_non_bytes32_input_is_refused(hashes: list) -> None:
    with pytest.raises(ValueError, match=r"at least one hash|32-byte hashes"):
        merkle_root(hashes)


def test_proof_for_an_absent_leaf_is_refused() -> None:
    with pytest.raises(ValueError, match="not among"):
        merkle_proof(HASHES[:3], HASHES[5])
