"""The federation's policy: every rule and limit the aggregator decides with, pinned at genesis.

The aggregator writes it into the genesis metadata blob, whose SHA-256 the chain holds, so an
auditor re-checks each inclusion and each rejection against what was pinned, never against a
default assumed later. Pure: values in, a JSON-ready mapping out, and back with validation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class PolicyError(ValueError):
    """A policy document with a missing or ill-typed field; the message names the field."""


@dataclass(frozen=True)
class FederationPolicy:
    """What the aggregator may include: the rule (with its parameters) and the limits on an update."""

    rule: str
    rule_params: Mapping[str, Any] = field(default_factory=dict)
    max_update_bytes: int = 64 * 1024 * 1024
    max_norm: float = 100.0

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": {"name": self.rule, "params": dict(self.rule_params)},
            "limits": {"max_update_bytes": self.max_update_bytes, "max_norm": self.max_norm},
        }

    @classmethod
    def from_json(cls, document: object) -> FederationPolicy:
        """The policy in `document`; `PolicyError` naming the field at fault for anything else."""
        if not isinstance(document, Mapping):
            raise PolicyError("'policy' must be an object")
        rule, limits = document.get("rule"), document.get("limits")
        if not isinstance(rule, Mapping) or not isinstance(rule.get("name"), str) or not isinstance(rule.get("params"), Mapping):
            raise PolicyError("'policy.rule' must be an object with a string 'name' and an object 'params'")
        if not isinstance(limits, Mapping):
            raise PolicyError("'policy.limits' must be an object")
        max_bytes, max_norm = limits.get("max_update_bytes"), limits.get("max_norm")
        if type(max_bytes) is not int or max_bytes <= 0:
            raise PolicyError("'policy.limits.max_update_bytes' must be a positive integer")
        if not isinstance(max_norm, (int, float)) or isinstance(max_norm, bool):
            raise PolicyError("'policy.limits.max_norm' must be a positive finite number")
        if not math.isfinite(max_norm) or max_norm <= 0:
            raise PolicyError("'policy.limits.max_norm' must be a positive finite number")
        return cls(rule=rule["name"], rule_params=dict(rule["params"]), max_update_bytes=max_bytes, max_norm=float(max_norm))
