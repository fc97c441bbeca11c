"""The ledger's functions as bytes: calldata and return values from the committed ABI, without web3's
contract machinery (which re-derives every function's selector to find one, ~1 ms of CPU per call:
a large part of a node's round on a busy machine)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from eth_abi import decode, encode
from eth_utils import function_abi_to_4byte_selector, to_checksum_address

from ledger.chain.artifact import load_artifact


@dataclass(frozen=True)
class Function:
    name: str
    selector: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def encode(self, args: Sequence[Any]) -> bytes:
        """`selector ‖ abi.encode(args)`."""
        return self.selector + encode(list(self.inputs), list(args))

    def decode(self, data: bytes | str) -> Any:
        """The return value (bytes, or 0x hex as JSON-RPC gives it) as web3 gives it: the value for
        one output, a tuple for several."""
        if isinstance(data, str):
            data = bytes.fromhex(data.removeprefix("0x"))
        values = tuple(
            to_checksum_address(value) if kind == "address" else value
            for kind, value in zip(self.outputs, decode(list(self.outputs), data))
        )
        return values[0] if len(values) == 1 else values


@lru_cache(maxsize=1)
def functions() -> dict[str, Function]:
    """The committed ABI's functions by name (the ledger overloads none)."""
    table = {}
    for item in load_artifact().abi:
        if item.get("type") == "function":
            table[item["name"]] = Function(
                name=item["name"],
                selector=function_abi_to_4byte_selector(cast(Any, item)),
                inputs=tuple(_type(arg) for arg in item["inputs"]),
                outputs=tuple(_type(arg) for arg in item.get("outputs", [])),
            )
    return table


def _type(arg: dict[str, Any]) -> str:
    """The canonical ABI type, tuples (structs) spelled out."""
    kind = str(arg["type"])
    if kind.startswith("tuple"):
        return "(" + ",".join(_type(component) for component in arg["components"]) + ")" + kind[len("tuple") :]
    return kind


def encode_call(name: str, args: Sequence[Any]) -> str:
    """0x calldata of a call to `name` with `args`."""
    return "0x" + functions()[name].encode(args).hex()
