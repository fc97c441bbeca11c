"""The project's one hash function (SHA-256) and the conversions between its text and bytes32 forms.

Text form is bare lowercase hex (what `sha256sum` prints); the chain holds the same digest as
bytes32. Inputs may carry a `0x` prefix (web3 adds one); outputs never do.
"""

from __future__ import annotations

import hashlib
import re
from typing import TypeGuard

HASH_BYTES = 32
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """SHA-256 of `data` as 64 lowercase hex characters: the identity of every blob."""
    return hashlib.sha256(data).hexdigest()


def is_sha256_hex(text: object) -> TypeGuard[str]:
    """Whether `text` is exactly the canonical text form (64 lowercase hex, no prefix)."""
    return isinstance(text, str) and _SHA256_HEX.fullmatch(text) is not None


def to_bytes32(hex_hash: str) -> bytes:
    """Digest text (optionally `0x`-prefixed, either case) as the 32 bytes the chain stores."""
    if not isinstance(hex_hash, str):
        raise TypeError(f"expected a hex string, got {type(hex_hash).__name__}")
    body = hex_hash[2:] if hex_hash[:2] in ("0x", "0X") else hex_hash
    if not is_sha256_hex(body.lower()):
        raise ValueError(f"not a SHA-256 hex digest (64 hex characters): {hex_hash!r}")
    return bytes.fromhex(body)


def from_bytes32(digest: bytes) -> str:
    """A bytes32 digest from the chain in canonical text form."""
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != HASH_BYTES:
        raise ValueError(f"expected {HASH_BYTES} bytes, got {digest!r}")
    return bytes(digest).hex()


def normalize_hash(hex_hash: str) -> str:
    """Any accepted digest text (prefix, upper case) in canonical form, for comparisons and keys."""
    return from_bytes32(to_bytes32(hex_hash))
