"""The base of every error fedledger raises on purpose, shared by every room (no dependencies)."""

from __future__ import annotations


class LedgerError(Exception):
    """A failure fedledger names: a contract refusal, an unreachable dependency, a bad record."""
