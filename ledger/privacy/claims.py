"""The privacy claim a node puts in its update blob: how it trained and the ε it has spent so far.

It travels in the blob's metadata (`ledger.core.encoding`), so its bytes are inside the hash the
chain pins: what a node claimed can never be changed afterwards. What the claim proves, and what
it cannot, is said in README.md ("Privacy"). Pure: JSON in, a checked value out, and back.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ledger.core.policy import EPSILON_DECIMALS

CLAIM_FIELDS = frozenset(
    {"accountant", "noise_multiplier", "max_grad_norm", "sample_rate", "steps", "delta", "epsilon"}
)
_EPSILON_TEXT = re.compile(r"(0|[1-9][0-9]*)\.[0-9]{%d}" % EPSILON_DECIMALS)


class ClaimError(ValueError):
    """A claim that is malformed or does not follow the pinned policy; the message says which field."""


@dataclass(frozen=True)
class PrivacyClaim:
    """One update's DP-SGD parameters, and the node's cumulative ε after it (6-decimal text, rounded up)."""

    accountant: str
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    delta: float
    epsilon: str

    def to_json(self) -> dict[str, Any]:
        return {
            "accountant": self.accountant,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "delta": self.delta,
            "epsilon": self.epsilon,
        }

    @classmethod
    def from_json(cls, document: object) -> PrivacyClaim:
        """The claim in untrusted JSON: exactly the claim's fields, each of its type, or `ClaimError`."""
        if not isinstance(document, dict) or set(document) != CLAIM_FIELDS:
            raise ClaimError(f"a privacy claim has exactly the fields {sorted(CLAIM_FIELDS)}")
        for name in ("noise_multiplier", "max_grad_norm", "sample_rate", "delta"):
            value = document[name]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ClaimError(f"the claim's {name!r} must be a finite number, got {value!r}")
        if type(document["steps"]) is not int or document["steps"] < 1:
            raise ClaimError(f"the claim's 'steps' must be a positive integer, got {document['steps']!r}")
        if not isinstance(document["accountant"], str):
            raise ClaimError("the claim's 'accountant' must be a string")
        epsilon = document["epsilon"]
        if not isinstance(epsilon, str) or not _EPSILON_TEXT.fullmatch(epsilon):
            raise ClaimError(f"the claim's 'epsilon' must be a decimal text with {EPSILON_DECIMALS} places, got {epsilon!r}")
        return cls(
            accountant=document["accountant"],
            noise_multiplier=float(document["noise_multiplier"]),
            max_grad_norm=float(document["max_grad_norm"]),
            sample_rate=float(document["sample_rate"]),
            steps=document["steps"],
            delta=float(document["delta"]),
            epsilon=epsilon,
        )
