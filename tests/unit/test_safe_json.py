"""Untrusted JSON is depth-checked before parsing: nested brackets are an error, not a crash."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ledger.core.safe_json import MAX_JSON_DEPTH, UntrustedJsonError, json_depth, parse_untrusted_json


def test_depth_ignores_brackets_inside_strings_and_escapes():
    assert json_depth('{"a": [1, {"b": "[[[{{{\\\\\\"]]]"}]}') == 3
    assert json_depth("[]") == 1
    assert json_depth('"no structure"') == 0


def test_parse_refuses_deep_nesting_bad_utf8_and_bad_json():
    assert parse_untrusted_json(b'{"ok": [1, 2]}') == {"ok": [1, 2]}
    with pytest.raises(UntrustedJsonError, match="nests"):
        parse_untrusted_json(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    with pytest.raises(UntrustedJsonError, match="UTF-8"):
        parse_untrusted_json(b"\xff\xfe")
    with pytest.raises(UntrustedJsonError, match="valid JSON"):
        parse_untrusted_json(b"{nope")


def test_a_hostile_safetensors_header_is_refused_with_web3_loaded_in_a_subprocess():
    """With web3 imported (recursion limit 100,000), 500k nested brackets used to segfault the process."""
    script = (
        "import struct, web3\n"
        "from ledger.core.serialization import MalformedBlob, deserialize_tensors\n"
        "header = b'[' * 500_000\n"
        "blob = struct.pack('<Q', len(header)) + header\n"
        "try:\n"
        "    deserialize_tensors(blob, max_bytes=len(blob))\n"
        "except MalformedBlob as exc:\n"
        "    print('refused:', str(exc)[:60])\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "refused:" in completed.stdout
