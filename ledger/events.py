"""Typed readers for the ledger's events: the auditor's record of who pinned what, and when.

Every event is decoded into a frozen dataclass that carries where it came from (`LogRef`), so the
indexer can be idempotent on (tx hash, log index) and notice reorgs by block hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3._utils.events import get_event_data

from ledger.artifact import load_artifact


@dataclass(frozen=True)
class LogRef:
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int


@dataclass(frozen=True)
class LedgerEvent:
    ref: LogRef
    event_name: ClassVar[str] = ""


@dataclass(frozen=True)
class AdminTransferred(LedgerEvent):
    previous_admin: str
    new_admin: str
    event_name: ClassVar[str] = "AdminTransferred"


@dataclass(frozen=True)
class AggregatorSet(LedgerEvent):
    account: str
    enabled: bool
    event_name: ClassVar[str] = "AggregatorSet"


@dataclass(frozen=True)
class NodeRegistered(LedgerEvent):
    node: str
    event_name: ClassVar[str] = "NodeRegistered"


@dataclass(frozen=True)
class NodeRevoked(LedgerEvent):
    node: str
    event_name: ClassVar[str] = "NodeRevoked"


@dataclass(frozen=True)
class ModelCommitted(LedgerEvent):
    round: int
    model_hash: str
    parent_hash: str | None
    version: int
    included_root: str | None
    included_count: int
    metadata_hash: str | None
    event_name: ClassVar[str] = "ModelCommitted"


@dataclass(frozen=True)
class RoundOpened(LedgerEvent):
    round: int
    base_model_hash: str
    deadline: int
    min_updates: int
    event_name: ClassVar[str] = "RoundOpened"


@dataclass(frozen=True)
class UpdateSubmitted(LedgerEvent):
    round: int
    node: str
    update_hash: str
    num_samples: int
    event_name: ClassVar[str] = "UpdateSubmitted"


@dataclass(frozen=True)
class UpdateRejected(LedgerEvent):
    round: int
    node: str
    update_hash: str
    reason_code: int
    event_name: ClassVar[str] = "UpdateRejected"


@dataclass(frozen=True)
class RoundAbandoned(LedgerEvent):
    round: int
    reason_code: int
    event_name: ClassVar[str] = "RoundAbandoned"


EVENT_TYPES: dict[str, type[LedgerEvent]] = {
    cls.event_name: cls
    for cls in (
        AdminTransferred,
        AggregatorSet,
        NodeRegistered,
        NodeRevoked,
        ModelCommitted,
        RoundOpened,
        UpdateSubmitted,
        UpdateRejected,
        RoundAbandoned,
    )
}

# Solidity camelCase argument → dataclass snake_case field.
_FIELD_NAMES = {
    "previousAdmin": "previous_admin",
    "newAdmin": "new_admin",
    "modelHash": "model_hash",
    "parentHash": "parent_hash",
    "includedRoot": "included_root",
    "includedCount": "included_count",
    "metadataHash": "metadata_hash",
    "baseModelHash": "base_model_hash",
    "minUpdates": "min_updates",
    "updateHash": "update_hash",
    "numSamples": "num_samples",
    "reasonCode": "reason_code",
}

_OPTIONAL_HASHES = {"parent_hash", "included_root", "metadata_hash"}


def _hex(value: Any) -> str:
    return bytes(value).hex()


def _event_abis() -> dict[bytes, dict[str, Any]]:
    table = {}
    for item in load_artifact().abi_items("event"):
        signature = f"{item['name']}({','.join(arg['type'] for arg in item['inputs'])})"
        table[keccak(text=signature)] = item
    return table


_BY_TOPIC = _event_abis()
TOPIC_BY_NAME: dict[str, str] = {abi["name"]: "0x" + topic.hex() for topic, abi in _BY_TOPIC.items()}


def _convert(field: str, abi_type: str, value: Any) -> Any:
    if abi_type == "address":
        return to_checksum_address(value)
    if abi_type == "bytes32":
        text = _hex(value)
        if field in _OPTIONAL_HASHES and text == "00" * 32:
            return None
        return text
    return value


def decode_log(w3: Web3, log: Any) -> LedgerEvent | None:
    """Decode one raw log of the ledger contract; None for a topic the ABI does not know."""
    topics = log["topics"]
    if not topics:
        return None
    abi = _BY_TOPIC.get(bytes(topics[0]))
    if abi is None:
        return None
    decoded = get_event_data(w3.codec, abi, log)
    cls = EVENT_TYPES[abi["name"]]
    fields = {}
    for arg in abi["inputs"]:
        field = _FIELD_NAMES.get(arg["name"], arg["name"])
        fields[field] = _convert(field, arg["type"], decoded["args"][arg["name"]])
    ref = LogRef(
        block_number=int(log["blockNumber"]),
        block_hash=_hex(log["blockHash"]),
        tx_hash=_hex(log["transactionHash"]),
        log_index=int(log["logIndex"]),
    )
    return cls(ref=ref, **fields)


def decode_logs(w3: Web3, logs: Iterable[Any]) -> Iterator[LedgerEvent]:
    for log in logs:
        event = decode_log(w3, log)
        if event is not None:
            yield event


def fetch_events(
    w3: Web3,
    address: str,
    from_block: int,
    to_block: int | str,
    *,
    event_names: Iterable[str] | None = None,
    topic_filters: list[Any] | None = None,
) -> list[LedgerEvent]:
    """All ledger events in a block range with one eth_getLogs, in chain order."""
    topic0: Any = None
    if event_names is not None:
        topic0 = [TOPIC_BY_NAME[name] for name in event_names]
    topics: list[Any] = [topic0] + list(topic_filters or [])
    while topics and topics[-1] is None:
        topics.pop()
    params: dict[str, Any] = {"address": address, "fromBlock": from_block, "toBlock": to_block}
    if topics:
        params["topics"] = topics
    logs = w3.eth.get_logs(params)
    return list(decode_logs(w3, logs))
