"""The federation's policy: every rule and limit the aggregator decides with, pinned at genesis.

The aggregator writes it into the genesis metadata blob, whose SHA-256 the chain holds, so an
auditor re-checks each inclusion and each rejection against what was pinned, never against a
default assumed later. Nodes read it from the same blob and follow it: the update encoding they
send, and (when the federation trains privately) the DP-SGD parameters and the per-node ε budget.
Pure: values in, a JSON-ready mapping out, and back with validation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

# The update encodings this build can write and read (`ledger.core.encoding` says what each is).
ENCODINGS: tuple[str, ...] = ("f32", "f16", "int8")
DEFAULT_ENCODING = "f32"

# The one accountant: Opacus's Rényi-DP analysis of the sampled Gaussian mechanism
# (`ledger.privacy.accountant`), summed one entry per round.
RDP_ACCOUNTANT = "opacus-rdp"
# The RDP orders ε is minimised over: the list Opacus's RDPAccountant uses by default (1.1 to 10.9
# by tenths, then 12 to 63). Pinned in the policy so a library upgrade cannot change ε.
RDP_ORDERS: tuple[float, ...] = tuple(1 + x / 10.0 for x in range(1, 100)) + tuple(float(a) for a in range(12, 64))
EPSILON_DECIMALS = 6


class PolicyError(ValueError):
    """A policy document with a missing or ill-typed field; the message names the field."""


def epsilon_text(value: Decimal | float | str) -> str:
    """ε as the text claims, budgets and records hold: a decimal rounded UP to 6 places.

    Rounding up keeps every recorded ε conservative; text keeps it data, not a float two
    platforms might print differently. `PolicyError` for anything that is not a finite ε ≥ 0.
    """
    try:
        exact = Decimal(value) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise PolicyError(f"ε must be a finite number >= 0, got {value!r}") from None
    if not exact.is_finite() or exact < 0:
        raise PolicyError(f"ε must be a finite number >= 0, got {value!r}")
    return str(exact.quantize(Decimal(1).scaleb(-EPSILON_DECIMALS), rounding=ROUND_CEILING))


@dataclass(frozen=True)
class PrivacyPolicy:
    """Node-side DP-SGD every node trains with, and the ε each node may spend in total.

    `batch_size` and `epochs` fix each update's privacy cost from its on-chain sample count n:
    Poisson sampling at rate q = 1/ceil(n / batch_size) and `steps(n)` noisy steps, as Opacus runs
    them. So a claim holds nothing a node may choose but its ε arithmetic, and the aggregator
    recomputes that.
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    epsilon_budget: str  # `epsilon_text` form; compared as a Decimal, never as a float
    batch_size: int = 64
    epochs: int = 2
    accountant: str = RDP_ACCOUNTANT
    orders: tuple[float, ...] = RDP_ORDERS

    def __post_init__(self) -> None:
        for name in ("noise_multiplier", "max_grad_norm"):
            if not _positive_finite(getattr(self, name)):
                raise PolicyError(f"'privacy.{name}' must be a positive finite number, got {getattr(self, name)!r}")
        if not _positive_finite(self.delta) or self.delta >= 1:
            raise PolicyError(f"'privacy.delta' must be in (0, 1), got {self.delta!r}")
        if not isinstance(self.epsilon_budget, str) or epsilon_text(self.epsilon_budget) != self.epsilon_budget:
            raise PolicyError(f"'privacy.epsilon_budget' must be a decimal text with 6 places, got {self.epsilon_budget!r}")
        for name in ("batch_size", "epochs"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise PolicyError(f"'privacy.{name}' must be a positive integer, got {value!r}")
        if not isinstance(self.accountant, str) or not self.accountant:
            raise PolicyError("'privacy.accountant' must be a non-empty string")
        if not self.orders or not all(_positive_finite(order) and order > 1 for order in self.orders):
            raise PolicyError("'privacy.orders' must be a non-empty list of finite numbers > 1")

    def sample_rate(self, num_samples: int) -> float:
        """Opacus's Poisson rate for a loader of `batch_size` over n samples: 1 / ceil(n / batch_size)."""
        return 1 / math.ceil(num_samples / self.batch_size)

    def steps(self, num_samples: int) -> int:
        """Noisy steps per round: `epochs` passes of int(1 / q) steps, Opacus's Poisson loader length
        (which is ceil(n / batch_size), or one less where 1 / (1 / k) rounds below k, e.g. k = 93)."""
        return self.epochs * int(1 / self.sample_rate(num_samples))

    def to_json(self) -> dict[str, Any]:
        return {
            "accountant": self.accountant,
            "orders": list(self.orders),
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "delta": self.delta,
            "epsilon_budget": self.epsilon_budget,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
        }

    @classmethod
    def from_json(cls, document: object) -> PrivacyPolicy:
        if not isinstance(document, Mapping):
            raise PolicyError("'policy.privacy' must be an object or null")
        orders = document.get("orders")
        if not isinstance(orders, Sequence) or isinstance(orders, str) or not all(_number(o) for o in orders):
            raise PolicyError("'privacy.orders' must be a list of numbers")
        numbers = {name: document.get(name) for name in ("noise_multiplier", "max_grad_norm", "delta")}
        for name, value in numbers.items():
            if not _number(value):
                raise PolicyError(f"'privacy.{name}' must be a number")
        return cls(
            noise_multiplier=float(numbers["noise_multiplier"]),  # type: ignore[arg-type]
            max_grad_norm=float(numbers["max_grad_norm"]),  # type: ignore[arg-type]
            delta=float(numbers["delta"]),  # type: ignore[arg-type]
            epsilon_budget=document.get("epsilon_budget"),  # type: ignore[arg-type]  # checked in __post_init__
            batch_size=document.get("batch_size"),  # type: ignore[arg-type]
            epochs=document.get("epochs"),  # type: ignore[arg-type]
            accountant=document.get("accountant"),  # type: ignore[arg-type]
            orders=tuple(float(o) for o in orders),
        )


DEFAULT_RULE = "arc_nnm_trimmed_mean"  # robust against 1 and 2 hostile nodes of 5 (`fedledger bench robustness`)
DEFAULT_MAX_NUM_SAMPLES = 10_000
# The rules of `ledger.core.aggregation` that weight updates by sample count (their `max_samples` param).
SAMPLE_WEIGHTED_RULES = frozenset({"fedavg", "krum"})


@dataclass(frozen=True)
class FederationPolicy:
    """What the aggregator may include: the rule (with its parameters), the limits on an update,
    the encoding updates travel in, and the node-side privacy policy (None: no DP).

    `max_num_samples` caps the sample count an update is weighted by (a node's claim is
    unverifiable); None only for policies pinned before the cap existed.
    """

    rule: str
    rule_params: Mapping[str, Any] = field(default_factory=dict)
    max_update_bytes: int = 64 * 1024 * 1024
    max_norm: float = 100.0
    encoding: str = DEFAULT_ENCODING
    privacy: PrivacyPolicy | None = None
    max_num_samples: int | None = DEFAULT_MAX_NUM_SAMPLES

    def __post_init__(self) -> None:
        if type(self.max_update_bytes) is not int or self.max_update_bytes <= 0:
            raise PolicyError(f"max_update_bytes must be a positive integer, got {self.max_update_bytes!r}")
        if not _positive_finite(self.max_norm):
            raise PolicyError(f"max_norm must be a positive finite number, got {self.max_norm!r}")
        if self.max_num_samples is not None and (type(self.max_num_samples) is not int or self.max_num_samples < 1):
            raise PolicyError(f"max_num_samples must be a positive integer, got {self.max_num_samples!r}")

    def rule_call_params(self) -> dict[str, Any]:
        """The parameters the rule runs with and each round records: the pinned ones, plus the
        sample cap for rules that weight by sample count (unless the params set their own)."""
        params = dict(self.rule_params)
        if self.rule in SAMPLE_WEIGHTED_RULES and self.max_num_samples is not None and params.get("max_samples") is None:
            params["max_samples"] = self.max_num_samples
        return params

    def to_json(self) -> dict[str, Any]:
        limits: dict[str, Any] = {"max_update_bytes": self.max_update_bytes, "max_norm": self.max_norm}
        if self.max_num_samples is not None:
            limits["max_num_samples"] = self.max_num_samples
        return {
            "rule": {"name": self.rule, "params": dict(self.rule_params)},
            "limits": limits,
            "encoding": self.encoding,
            "privacy": None if self.privacy is None else self.privacy.to_json(),
        }

    @classmethod
    def from_json(cls, document: object) -> FederationPolicy:
        """The policy in `document`; `PolicyError` naming the field at fault for anything else.

        A record written before encodings and privacy were pinned has neither key; it was made
        with float32 updates and no DP, which is what the defaults say.
        """
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
        if not _number(max_norm) or not _positive_finite(float(max_norm)):  # type: ignore[arg-type]
            raise PolicyError("'policy.limits.max_norm' must be a positive finite number")
        max_samples = limits.get("max_num_samples")
        if max_samples is not None and (type(max_samples) is not int or max_samples < 1):
            raise PolicyError("'policy.limits.max_num_samples' must be a positive integer")
        encoding = document.get("encoding", DEFAULT_ENCODING)
        if not isinstance(encoding, str) or not encoding:
            raise PolicyError("'policy.encoding' must be a non-empty string")
        privacy = document.get("privacy")
        return cls(
            rule=rule["name"],
            rule_params=dict(rule["params"]),
            max_update_bytes=max_bytes,
            max_norm=float(max_norm),  # type: ignore[arg-type]
            encoding=encoding,
            privacy=None if privacy is None else PrivacyPolicy.from_json(privacy),
            max_num_samples=max_samples,
        )


def _number(value: object) -> bool:
    """A JSON number (bool is an int subclass, and no JSON number is a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_finite(value: object) -> bool:
    return _number(value) and math.isfinite(value) and value > 0  # type: ignore[arg-type,operator]
