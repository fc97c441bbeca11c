"""The one hash function and its text/bytes32 forms."""

from __future__ import annotations

import pytest

from ledger.core.hashing import from_bytes32, is_sha256_hex, normalize_hash, sha256_hex, to_bytes32

ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 test vector


def test_sha256_hex_is_lowercase_hex_of_the_digest() -> None:
    assert sha256_hex(b"abc") == ABC
    assert is_sha256_hex(ABC)


@pytest.mark.parametrize("text", [ABC.upper(), "0x" + ABC, ABC[:-1], ABC + "0", "g" * 64, None, 1])
def test_only_bare_lowercase_64_hex_is_canonical(text: object) -> None:
    assert not is_sha256_hex(text)


@pytest.mark.parametrize("text", [ABC, "0x" + ABC, "0X" + ABC.upper()])
def test_bytes32_round_trip_accepts_a_0x_prefix_and_any_case(text: str) -> None:
    assert to_bytes32(text) == bytes.fromhex(ABC)
    assert from_bytes32(to_bytes32(text)) == ABC
    assert normalize_hash(text) == ABC


@pytest.mark.parametrize("text", [ABC[:-2], "0x", "0x0x" + ABC[4:], "zz" + ABC[2:]])
def test_to_bytes32_refuses_what_is_not_a_digest(text: str) -> None:
    with pytest.raises(ValueError, match="not a SHA-256 hex digest"):
        to_bytes32(text)


def test_from_bytes32_refuses_other_lengths() -> None:
    with pytest.raises(ValueError, match="expected 32 bytes"):
        from_bytes32(b"\x00" * 31)
