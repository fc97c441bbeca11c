"""JSON in and out: the one parser for untrusted bytes, and the one canonical encoder for hashed bytes.

Parsing (safetensors headers, metadata blobs):

web3's py_ecc raises Python's recursion limit to 100,000 on import; at that limit `json.loads` on
a few hundred thousand nested brackets overflows the C stack and kills the process instead of
raising. So nesting depth is measured first, in one linear, non-recursive pass.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

MAX_JSON_DEPTH = 32
_STRUCTURAL = re.compile(r'[\\"\[\]{}]')


class UntrustedJsonError(ValueError):
    """Bytes that are not acceptable JSON: bad UTF-8, bad syntax, or nested too deep."""


def json_depth(text: str) -> int:
    """How deep arrays and objects nest, counting only brackets outside strings."""
    depth = deepest = 0
    in_string = False
    escaped_until = -1
    for match in _STRUCTURAL.finditer(text):
        position, char = match.start(), match.group()
        if position < escaped_until:
            continue
        if in_string:
            if char == "\\":
                escaped_until = position + 2
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_untrusted_json(
    data: bytes | str,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """`json.loads`, but only after checking UTF-8 and nesting depth; `UntrustedJsonError` otherwise."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray, memoryview)) else data
    except UnicodeDecodeError as exc:
        raise UntrustedJsonError(f"not UTF-8: {exc}") from exc
    depth = json_depth(text)
    if depth > max_depth:
        raise UntrustedJsonError(f"JSON nests {depth} deep, over the limit of {max_depth}")
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except ValueError as exc:
        raise UntrustedJsonError(f"not valid JSON: {exc}") from exc


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no whitespace, for metadata blobs that get hashed.

    NaN and infinities are refused (JSON has no spelling for them that every reader agrees on),
    and so are non-string keys, which JSON would silently turn into strings.
    """
    _check_json_value(value)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def _check_json_value(value: Any) -> None:
    """Refuses what `json.dumps` would encode ambiguously (non-finite floats, non-string keys)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"non-finite float {value!r} cannot be canonical JSON")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"JSON object keys must be strings, got {key!r}")
            _check_json_value(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_json_value(item)
