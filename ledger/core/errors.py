"""The base of every error fedledger raises on purpose, shared by every room (no dependencies)."""

from __future__ import annotations


class LedgerError(Exception):
    """A failure fedledger names: a contract refusal, an unreachable dependency, a bad record."""


class Unavailable(LedgerError):
    """A dependency (the chain, the blob store) did not answer within the process's patience.

    Not a verdict on anything: the command exits with its own code (3) and a restart finishes
    the work from the chain.
    """
