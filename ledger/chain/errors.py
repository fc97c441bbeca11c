"""Python exceptions for everything the ledger contract can refuse, decoded from its custom errors.

A revert carries 4 selector bytes and ABI-encoded arguments; `decode_revert` turns that into e.g.
`AlreadySubmitted(round=3, node=0x…)` so callers catch a named type, not a hex string.
"""

from __future__ import annotations

import ast
from functools import cache
from typing import Any, ClassVar

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from ledger.chain.artifact import load_artifact
from ledger.core.errors import LedgerError


class TransactionReverted(LedgerError):
    """The chain refused a transaction for a reason the contract's ABI does not name."""

    def __init__(self, message: str, data: bytes | None = None) -> None:
        super().__init__(message)
        self.data = data


class DevKeyRefused(LedgerError):
    """A well-known dev key was offered to a chain where anyone could use it."""


class LedgerRevert(LedgerError):
    """A custom error raised by FederatedLedger; subclasses carry the error's arguments."""

    solidity_name: ClassVar[str] = ""

    def __init__(self, **arguments: Any) -> None:
        self.arguments = arguments
        for name, value in arguments.items():
            setattr(self, name, value)
        super().__init__(self._describe())

    def _describe(self) -> str:
        shown = ", ".join(f"{k}={_show(v)}" for k, v in self.arguments.items())
        doc = (type(self).__doc__ or "").strip()
        return f"{type(self).__name__}({shown})" + (f": {doc}" if doc else "")


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


# One class per contract error; the Solidity name is "Ledger" + the class name.
class NotAdmin(LedgerRevert):
    """the caller is not the admin"""


class NotAggregator(LedgerRevert):
    """the caller does not hold the aggregator role"""


class NotNode(LedgerRevert):
    """the account is not a registered node (never registered, or revoked)"""


class ZeroAddress(LedgerRevert):
    """the zero address was given where an account is required"""


class ZeroHash(LedgerRevert):
    """a zero hash was given where a SHA-256 digest is required"""


class NodeAlreadyRegistered(LedgerRevert):
    """the node is already registered"""


class AggregatorUnchanged(LedgerRevert):
    """the aggregator role is already in the requested state"""


class GenesisAlreadyCommitted(LedgerRevert):
    """the genesis model was already committed"""


class RoundOutOfOrder(LedgerRevert):
    """rounds are numbered 1, 2, 3, ... with no gaps"""


class RoundStillOpen(LedgerRevert):
    """the previous round must be finalized or abandoned first"""


class ModelNotCommitted(LedgerRevert):
    """the model hash is not a committed version"""


class ModelAlreadyCommitted(LedgerRevert):
    """the model hash is already a committed version"""


class DeadlineNotInFuture(LedgerRevert):
    """the deadline is not in the future"""


class ZeroMinUpdates(LedgerRevert):
    """minUpdates must be at least one"""


class RoundNotOpen(LedgerRevert):
    """the round is not open (never opened, finalized or abandoned)"""


class DeadlinePassed(LedgerRevert):
    """the round's submission deadline has passed"""


class AlreadySubmitted(LedgerRevert):
    """the node already submitted an update in this round"""


class ZeroSamples(LedgerRevert):
    """an update must be trained on at least one sample"""


class NoSubmission(LedgerRevert):
    """the node has no submission in this round"""


class AlreadyRejected(LedgerRevert):
    """the node's submission in this round was already rejected"""


class ZeroReason(LedgerRevert):
    """a rejection needs a non-zero reason code"""


class TooFewUpdates(LedgerRevert):
    """too few included updates to finalize the round yet"""


class DeadlineNotPassed(LedgerRevert):
    """the round's deadline has not passed yet"""


class NotPendingAdmin(LedgerRevert):
    """the caller is not the pending admin named by transferAdmin"""


class NotAuditor(LedgerRevert):
    """the caller does not hold the auditor role"""


class AuditorUnchanged(LedgerRevert):
    """the auditor role is already in the requested state"""


class TooManyAuditors(LedgerRevert):
    """a deployment can grant the auditor role to at most maxAuditors distinct accounts"""


class QuorumTooLarge(LedgerRevert):
    """the attestation quorum cannot exceed the number of possible auditors"""


class NoGenesis(LedgerRevert):
    """the genesis model has not been committed yet"""


class BaseNotAttested(LedgerRevert):
    """the base version lacks the attestation quorum, or has a failing attestation the admin has not resolved"""


class AlreadyAttested(LedgerRevert):
    """this auditor already attested this version"""


class NoFailingAttestation(LedgerRevert):
    """this auditor has no unresolved failing attestation of this version"""


class MalformedBatch(LedgerRevert):
    """a batch of signed submissions must be a non-empty multiple of 104 bytes"""


class InvalidSignature(LedgerRevert):
    """a signed submission in the batch has a malleable or unrecoverable signature"""


class SignerNotNode(LedgerRevert):
    """a signed submission in the batch was not signed by a registered node (or was signed for another round, chain or contract)"""


def _error_classes() -> dict[str, type[LedgerRevert]]:
    return {"Ledger" + cls.__name__: cls for cls in LedgerRevert.__subclasses__()}


@cache
def _selector_table() -> dict[bytes, tuple[type[LedgerRevert], list[str], list[str]]]:
    classes = _error_classes()
    table = {}
    for item in load_artifact().abi_items("error"):
        types = [arg["type"] for arg in item["inputs"]]
        names = [arg["name"] for arg in item["inputs"]]
        selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
        table[selector] = (classes[item["name"]], types, names)
    return table


def decode_revert(data: bytes) -> LedgerError:
    """Turn raw revert data into the matching exception (TransactionReverted if unknown)."""
    entry = _selector_table().get(bytes(data[:4]))
    if entry is None:
        return TransactionReverted(f"transaction reverted with unrecognised data 0x{bytes(data).hex()}", data)
    cls, types, names = entry
    values = abi_decode(types, bytes(data[4:]))
    arguments = {}
    for name, abi_type, value in zip(names, types, values):
        arguments[name] = to_checksum_address(value) if abi_type == "address" else value
    return cls(**arguments)


def revert_data_from(exc: BaseException) -> bytes | None:
    """Dig the revert bytes out of whatever a provider raised (web3, eth-tester, JSON-RPC)."""
    data: Any = getattr(exc, "data", None)
    if data is None:
        rpc_response = getattr(exc, "rpc_response", None)
        if isinstance(rpc_response, dict):
            data = (rpc_response.get("error") or {}).get("data")
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    # eth-tester: TransactionFailed("execution reverted: b'...'")
    message = str(exc.args[0]) if exc.args else ""
    marker = "execution reverted: "
    if message.startswith(marker) and message[len(marker) :].startswith(("b'", 'b"')):
        try:
            parsed = ast.literal_eval(message[len(marker) :])
        except (ValueError, SyntaxError):
            return None
        if isinstance(parsed, bytes):
            return parsed
    return None
