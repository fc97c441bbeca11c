"""The signed-upload wire protocol of the HTTP blob store, shared by the client and the server.

Uploads carry an EIP-191 signature (`X-Fedledger-Signature`) over `blob_upload_message`, which
binds the blob's SHA-256 to one chain id and one contract, so a signature made for this federation
is worthless anywhere else. The server accepts it only while the signer is a registered node or an
aggregator (a chain fact the server checks; this module only recovers who signed).
"""

from __future__ import annotations

import re
from typing import Protocol

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_utils import to_checksum_address
from eth_utils.exceptions import ValidationError

from ledger.store.base import check_name

SIGNATURE_HEADER = "X-Fedledger-Signature"
CONTENT_HASH_HEADER = "X-Content-SHA256"
BLOBS_PATH = "/blobs/"
_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")  # 65 bytes: r, s, v




class Federation(Protocol):
    """Which ledger a signature is for: a chain id and a contract address (a `LedgerClient` is one)."""

    @property
    def chain_id(self) -> int: ...

    @property
    def address(self) -> str: ...


class MalformedSignature(ValueError):
    """A signature header that is not 65 bytes of 0x-hex, or from which no signer can be recovered."""


def blob_upload_message(blob_hash: str, chain_id: int, contract_address: str) -> str:
    """The text a node or aggregator signs (EIP-191) to upload the blob named `blob_hash`.

    Chain id and contract make the signature valid for one federation only; the hash makes it
    valid for one blob only (replaying it can only re-upload those same bytes, which is harmless).
    """
    check_name(blob_hash)
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id <= 0:
        raise ValueError(f"chain id must be a positive integer, got {chain_id!r}")
    return (
        "fedledger blob upload\n"
        f"chain: {chain_id}\n"
        f"contract: {to_checksum_address(contract_address)}\n"
        f"sha256: {blob_hash}"
    )


def sign_upload(account: LocalAccount, blob_hash: str, chain_id: int, contract_address: str) -> str:
    """The `X-Fedledger-Signature` value (0x + 130 hex) for uploading `blob_hash`."""
    message = encode_defunct(text=blob_upload_message(blob_hash, chain_id, contract_address))
    return "0x" + bytes(account.sign_message(message).signature).hex()


def recover_upload_signer(signature: str, blob_hash: str, chain_id: int, contract_address: str) -> str:
    """The checksummed address that signed this upload; `MalformedSignature` if there is none.

    A signature over another hash, chain or contract still recovers, to an unrelated address:
    the caller's role check is what refuses it.
    """
    if not isinstance(signature, str) or _SIGNATURE.fullmatch(signature) is None:
        raise MalformedSignature(f"{SIGNATURE_HEADER} must be 0x followed by 130 hex characters (65 bytes)")
    message = encode_defunct(text=blob_upload_message(blob_hash, chain_id, contract_address))
    try:
        return Account.recover_message(message, signature=bytes.fromhex(signature[2:]))
    except (BadSignature, ValidationError, ValueError) as exc:
        raise MalformedSignature(f"no signer can be recovered from {SIGNATURE_HEADER}: {exc}") from None
