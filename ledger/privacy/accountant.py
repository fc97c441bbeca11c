"""The one ε computation: Opacus's Rényi-DP accountant, summed one entry per round, in round order.

A node's cumulative ε after round r is ε(Σ over its published updates up to r of RDP(q, σ, steps)),
converted to (ε, δ) at the pinned orders (Balle et al. 2020, as Opacus's `get_privacy_spent` does).
This is exactly what Opacus's `RDPAccountant` returns for a history of one entry per round. Not a
long-lived accountant stepped per batch: it merges consecutive equal steps into one entry, which is
mathematically equal but can differ in the last bit, and the node and the aggregator must agree.

With pinned library versions the result is bit-identical across processes and thread counts;
across numpy/scipy versions it can move by an ulp, so claims are compared with a tolerance
(`ledger.privacy.judge`) and what is recorded is the claim's text, never a recomputed float.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Spend:
    """One published update's DP-SGD, as the accountant needs it."""

    noise_multiplier: float
    sample_rate: float
    steps: int


def cumulative_epsilon(spends: Sequence[Spend], *, delta: float, orders: Sequence[float]) -> float:
    """ε after `spends` (in round order) at `delta`; 0.0 for none."""
    if not spends:
        return 0.0
    total: Any = 0
    for spend in spends:
        total = total + np.array(_round_rdp(spend.sample_rate, spend.noise_multiplier, spend.steps, tuple(orders)))
    with warnings.catch_warnings():
        # Opacus warns when the best order is at the end of the list; ε is still a valid upper bound.
        warnings.filterwarnings("ignore", message="Optimal order is the")
        epsilon, _ = _rdp().get_privacy_spent(orders=list(orders), rdp=total, delta=delta)
    return float(epsilon)


def calibrate_noise_multiplier(
    target_epsilon: float,
    *,
    sample_rate: float,
    steps_per_round: int,
    rounds: int,
    delta: float,
    orders: Sequence[float],
    decimals: int = 4,
) -> float:
    """The smallest σ (with `decimals` places) whose ε after `rounds` equal rounds is ≤ the target.

    Bisection to the last place (Opacus's own `get_noise_multiplier` stops at a 0.01 tolerance in ε,
    which gives a noticeably larger σ).
    """

    def epsilon(sigma: float) -> float:
        return cumulative_epsilon([Spend(sigma, sample_rate, steps_per_round)] * rounds, delta=delta, orders=orders)

    low, high = 0.0, 1.0
    while epsilon(high) > target_epsilon:
        low, high = high, high * 2
    step = 10.0**-decimals
    while high - low > step / 2:
        middle = (low + high) / 2
        if epsilon(middle) > target_epsilon:
            low = middle
        else:
            high = middle
    sigma = round(math.ceil(high / step) * step, decimals)
    while epsilon(sigma) > target_epsilon:  # the rounding to `decimals` places may land a hair low
        sigma = round(sigma + step, decimals)
    return sigma


@functools.lru_cache(maxsize=4096)
def _round_rdp(sample_rate: float, noise_multiplier: float, steps: int, orders: tuple[float, ...]) -> tuple[float, ...]:
    # ~0.2 s per call at small σ (scipy special functions per fractional order); a node's rounds
    # repeat the same few entries, so the pure result is cached.
    rdp = _rdp().compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=steps, orders=list(orders))
    return tuple(float(value) for value in rdp)


@functools.cache
def _rdp() -> ModuleType:
    """Opacus's RDP analysis, imported on first use (importing opacus takes seconds)."""
    from opacus.accountants.analysis import rdp

    return rdp
