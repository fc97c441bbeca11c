"""Aggregation rules: pure, deterministic functions from a round's updates to the new weights.

Every rule orders the updates by hash first (so arrival order never matters), accumulates in
float64 with numpy (single-threaded, so the thread count cannot change the result) and returns
fresh float32 tensors sorted by name. Inputs are never modified. Same updates in, same bytes
out: that is what lets an auditor re-run a round and compare its hash with the chain's.
Updates are weights (see edge_node.training), not deltas: the tensors a task trains, which are
all of the model's or only its trainable part (the pinned manifest says which; the callers copy
frozen tensors from the base with `ledger.core.manifest.with_frozen`). Every rule merges exactly the
tensors the updates carry. The robust default, `arc_nnm_trimmed_mean`, works on their changes
from the round's base, which it is given.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ledger.core.hashing import is_sha256_hex


@dataclass(frozen=True)
class Update:
    """One validated update: its on-chain hash, the sample count it claims, and its weights."""

    update_hash: str
    num_samples: int
    tensors: Mapping[str, torch.Tensor]

    def __post_init__(self) -> None:
        if not is_sha256_hex(self.update_hash):
            raise ValueError(f"update_hash must be 64 lowercase hex characters, got {self.update_hash!r}")
        if type(self.num_samples) is not int or self.num_samples < 1:  # bool is an int subclass
            raise ValueError(f"num_samples must be a positive int, got {self.num_samples!r}")


Weights = dict[str, torch.Tensor]
Rule = Callable[..., Weights]


def sample_weight(num_samples: int, max_samples: int | None) -> int:
    """The weight an update's self-reported `num_samples` earns: capped at the federation's bound.

    Nothing on chain can prove a sample count, so the cap (pinned in the policy and in each
    round's rule parameters) is all that stops one node from outweighing all others.
    """
    if max_samples is None:
        return num_samples
    if type(max_samples) is not int or max_samples < 1:
        raise ValueError(f"max_samples must be a positive int, got {max_samples!r}")
    return min(num_samples, max_samples)


def fedavg(updates: Sequence[Update], *, max_samples: int | None = None) -> Weights:
    """Average of the weights, each update weighted by its `num_samples` (McMahan et al., 2017),
    capped at `max_samples` when given (see `sample_weight`)."""
    ordered = _ordered(updates)
    weights = [sample_weight(update.num_samples, max_samples) for update in ordered]
    total = sum(weights)
    result: dict[str, np.ndarray] = {}
    for name in _names(ordered):
        accumulator = np.zeros(tuple(ordered[0].tensors[name].shape), dtype=np.float64)
        for weight, update in zip(weights, ordered, strict=True):
            accumulator += weight * _as_float64(update.tensors[name])
        result[name] = accumulator / total
    return _as_weights(result)


def coordinate_median(updates: Sequence[Update]) -> Weights:
    """Per-coordinate median, unweighted; with an even count, the mean of the two middle values."""
    ordered = _ordered(updates)
    middle = len(ordered) // 2
    result: dict[str, np.ndarray] = {}
    for name in _names(ordered):
        values = np.sort(_stack(ordered, name), axis=0)
        if len(ordered) % 2:
            result[name] = values[middle]
        else:
            result[name] = (values[middle - 1] + values[middle]) / 2.0
    return _as_weights(result)


def trimmed_mean(updates: Sequence[Update], *, trim_ratio: float) -> Weights:
    """Per-coordinate mean, unweighted, after dropping the floor(trim_ratio * n) lowest and highest."""
    ordered = _ordered(updates)
    if not 0.0 <= trim_ratio < 0.5:
        raise ValueError(f"trim_ratio must be in [0, 0.5), got {trim_ratio}")
    cut = math.floor(trim_ratio * len(ordered))
    kept = len(ordered) - 2 * cut
    result: dict[str, np.ndarray] = {}
    for name in _names(ordered):
        values = np.sort(_stack(ordered, name), axis=0)
        accumulator = np.zeros(values.shape[1:], dtype=np.float64)
        for row in values[cut : cut + kept]:
            accumulator += row
        result[name] = accumulator / kept
    return _as_weights(result)


def krum(
    updates: Sequence[Update], *, num_byzantine: int, num_selected: int = 1, max_samples: int | None = None
) -> Weights:
    """Krum (Blanchard et al., 2017): the update closest to its n - f - 2 nearest neighbours.

    Each update's score is the sum of squared L2 distances to its n - f - 2 nearest others; the
    lowest score wins, ties going to the smaller update hash. With `num_selected` m > 1 this is
    Multi-Krum: the m best are combined by `fedavg` (sample weights capped at `max_samples`).
    Needs n >= 2f + 3 updates.
    """
    ordered = _ordered(updates)
    count = len(ordered)
    if num_byzantine < 0 or count < 2 * num_byzantine + 3:
        needed = 2 * num_byzantine + 3
        raise ValueError(
            f"Krum with num_byzantine={num_byzantine} needs at least {needed} updates, got {count}"
        )
    if not 1 <= num_selected <= count:
        raise ValueError(f"num_selected must be in [1, {count}], got {num_selected}")
    names = _names(ordered)
    flat = np.stack(
        [np.concatenate([_as_float64(u.tensors[name]).ravel() for name in names]) for u in ordered]
    )
    distances = np.zeros((count, count), dtype=np.float64)
    for i in range(count):
        for j in range(i + 1, count):
            difference = flat[i] - flat[j]
            distances[i, j] = distances[j, i] = float(np.sum(difference * difference))
    neighbours = count - num_byzantine - 2
    scores = [math.fsum(sorted(np.delete(distances[i], i))[:neighbours]) for i in range(count)]
    best = sorted(range(count), key=lambda i: (scores[i], i))[:num_selected]
    if num_selected == 1:
        return _as_weights({name: _as_float64(ordered[best[0]].tensors[name]) for name in names})
    return fedavg([ordered[i] for i in best], max_samples=max_samples)


def arc_nnm_trimmed_mean(
    updates: Sequence[Update], *, base: Mapping[str, torch.Tensor], byzantine_fraction: float = 0.4
) -> Weights:
    """The robust default: base + CWTM_f(NNM_f(ARC_f(changes))), every update counted once.

    With the changes x_i = W_i - base (float64, flattened over sorted names, rows in hash order)
    and f = `byzantine_budget(n, byzantine_fraction)` (2 of 5, 1 of 3 or 4, 0 of 1 or 2):
    1. ARC, adaptive robust clipping (Allouah et al. 2024): the k = floor(2f(n - f)/n) longest
       changes are scaled down to the length of the (k+1)-th longest, so no change can be much
       longer than most honest ones, whatever the absolute norm bound allows;
    2. NNM, nearest-neighbour mixing (Allouah et al. 2023): each change becomes the mean of its
       n - f nearest changes (itself included), which shrinks what f outliers can pull, also
       when honest nodes' data differ (non-IID);
    3. CWTM, coordinate-wise trimmed mean (Yin et al. 2018): per coordinate, the mean after
       dropping the f lowest and f highest values.
    Sample counts weigh nothing: they are self-reported. Lengths and distances are exactly rounded
    sums (`_sum_of_squares`), never BLAS; neighbour ranks break ties by hash order. ByzFL (EPFL)
    implements the same three steps; this is an independent implementation.

    Partial updates: the changes span the tensors the updates carry (a task's trainable ones) and
    the result holds exactly those; `base` may be the full model, its other (frozen) tensors are
    not read. A frozen tensor's change would be 0 in every row and add exactly 0 to every length,
    distance and mean, so this is bit for bit the rule over full models whose frozen tensors equal
    the base's (tests/unit/test_rules.py proves it).
    """
    ordered = _ordered(updates)
    names = _names(ordered)
    missing = sorted(set(names) - set(base))
    if missing:
        raise ValueError(f"the base has no tensors {missing}; validate updates first")
    for name in names:
        if tuple(base[name].shape) != tuple(ordered[0].tensors[name].shape):
            raise ValueError(
                f"tensor {name!r}: the base's shape {tuple(base[name].shape)} is not the updates' "
                f"{tuple(ordered[0].tensors[name].shape)}; validate updates first"
            )
    reference = np.concatenate([_as_float64(base[name]).ravel() for name in names])
    changes = np.stack([np.concatenate([_as_float64(u.tensors[name]).ravel() for name in names]) for u in ordered])
    changes -= reference
    byzantine = byzantine_budget(len(ordered), byzantine_fraction)
    mixed = nearest_neighbour_mixing(adaptive_robust_clip(changes, byzantine), byzantine)
    merged = reference + coordinate_trimmed_mean(mixed, byzantine)
    result: dict[str, np.ndarray] = {}
    offset = 0
    for name in names:
        shape = tuple(base[name].shape)
        size = int(np.prod(shape, dtype=np.int64))
        result[name] = merged[offset : offset + size].reshape(shape)
        offset += size
    return _as_weights(result)


def byzantine_budget(count: int, byzantine_fraction: float) -> int:
    """How many of `count` updates the robust rule assumes hostile: floor(fraction · n), never half."""
    if not 0.0 <= byzantine_fraction < 0.5:
        raise ValueError(f"byzantine_fraction must be in [0, 0.5), got {byzantine_fraction}")
    return max(0, min(math.floor(byzantine_fraction * count), (count + 1) // 2 - 1))


def adaptive_robust_clip(rows: np.ndarray, byzantine: int) -> np.ndarray:
    """ARC: a new matrix whose k = floor(2f(n - f)/n) longest rows (ties: later row first) are scaled
    to the length of the (k+1)-th longest; `rows` is not modified."""
    count = rows.shape[0]
    clipped = np.array(rows, dtype=np.float64, copy=True)
    k = math.floor(2 * byzantine * (count - byzantine) / count) if count else 0
    if not 0 < k < count:
        return clipped
    lengths = [math.sqrt(_sum_of_squares(row)) for row in rows]
    by_length = sorted(range(count), key=lambda i: (lengths[i], i))
    threshold = lengths[by_length[count - k - 1]]
    for i in by_length[count - k :]:
        if lengths[i] > threshold:
            clipped[i] *= threshold / lengths[i]
    return clipped


def nearest_neighbour_mixing(rows: np.ndarray, byzantine: int) -> np.ndarray:
    """NNM: row i becomes the mean of its n - f nearest rows (itself included; ties: lower row first),
    summed in row order; `rows` is not modified. Distances are exactly rounded (`_sum_of_squares`);
    `_nearest` finds the same neighbours without computing all n² of them that way."""
    count = rows.shape[0]
    if byzantine <= 0:
        return np.array(rows, dtype=np.float64, copy=True)
    keep = count - byzantine
    distance = _ExactDistances(rows)
    mixed = np.empty_like(rows, dtype=np.float64)
    for i, nearest in enumerate(_nearest(rows, keep, distance)):
        accumulator = np.zeros(rows.shape[1], dtype=np.float64)
        for j in nearest:
            accumulator += rows[j]
        mixed[i] = accumulator / keep
    return mixed


class _ExactDistances:
    """Exactly rounded squared distances between rows, each computed once."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self._known: dict[tuple[int, int], float] = {}

    def __call__(self, i: int, j: int) -> float:
        if i == j:
            return 0.0
        key = (i, j) if i < j else (j, i)
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = _sum_of_squares(self.rows[i] - self.rows[j])
        return found


def _nearest(rows: np.ndarray, keep: int, distance: _ExactDistances) -> list[list[int]]:
    """For each row i, the `keep` rows j with the smallest (exact distance(i, j), j), in row order.

    The same sets as ranking every pair by its exactly rounded distance, for a fraction of the cost
    at a thousand rows: distances are first estimated from a Gram matrix (BLAS, any summation order)
    with a proven error bound, and only the rows whose bound straddles the `keep`-th distance get
    their exact distance. With s_j = Σ x_j² (exactly rounded) and g = fl(x_i · x_j), the estimate
    s_i + s_j - 2g differs from the true squared distance by at most (d + 3)·u·(s_i + s_j)·2 + the
    underflow slack, and the exactly rounded one from the true one by u of it; `_BOUND_SAFETY`
    covers the rest. An estimate that is not finite sends the row to exact distances only.
    """
    count, width = rows.shape
    norms = np.array([_sum_of_squares(row) for row in rows], dtype=np.float64)
    with np.errstate(all="ignore"):
        gram = rows @ rows.T
    relative = _BOUND_SAFETY * (width + 3) * 2.0**-53
    slack = _BOUND_SAFETY * (width + 3) * 2.0**-1074 + 2.0**-1022
    chosen = []
    for i in range(count):
        with np.errstate(all="ignore"):
            estimate = norms[i] + norms - 2.0 * gram[i]
            error = relative * (norms[i] + norms) + slack
        estimate[i], error[i] = 0.0, 0.0
        if not (np.all(np.isfinite(estimate)) and np.all(np.isfinite(error))):
            ranked = sorted(range(count), key=lambda j: (distance(i, j), j))
            chosen.append(sorted(ranked[:keep]))
            continue
        low, high = estimate - error, estimate + error
        low_kth = float(np.partition(low, keep - 1)[keep - 1])  # the keep-th smallest exact distance is within these
        high_kth = float(np.partition(high, keep - 1)[keep - 1])
        certain = [int(j) for j in np.flatnonzero(high < low_kth)]
        unsure = [int(j) for j in np.flatnonzero((high >= low_kth) & (low <= high_kth))]
        unsure.sort(key=lambda j: (distance(i, j), j))
        chosen.append(sorted(certain + unsure[: keep - len(certain)]))
    return chosen


_BOUND_SAFETY = 4.0  # the bound's factor over the first-order error analysis


def coordinate_trimmed_mean(rows: np.ndarray, trim: int) -> np.ndarray:
    """Per column, the mean after dropping the `trim` lowest and `trim` highest values."""
    count = rows.shape[0]
    if not 0 <= 2 * trim < count:
        raise ValueError(f"cannot trim {trim} from each side of {count} values")
    values = np.sort(rows, axis=0, kind="stable")
    accumulator = np.zeros(rows.shape[1], dtype=np.float64)
    for row in values[trim : count - trim]:
        accumulator += row
    mean: np.ndarray = accumulator / (count - 2 * trim)
    return mean


def _sum_of_squares(row: np.ndarray) -> float:
    """Σ row², exactly rounded (`math.fsum` of the float64 squares): the same float on every CPU,
    numpy build and thread count. The clipping factors and neighbour sets hang on these sums, and
    an auditor re-derives on another machine, so no reduction order may matter. The price is a
    Python-level sum: milliseconds for this MLP, minutes for 100 updates of millions of weights."""
    return math.fsum((row * row).tolist())


RULES: dict[str, Rule] = {
    "fedavg": fedavg,
    "coordinate_median": coordinate_median,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "arc_nnm_trimmed_mean": arc_nnm_trimmed_mean,
}

# Rules that work on changes from the round's base model, so `aggregate` hands them `base`.
RULES_ON_CHANGES = frozenset({"arc_nnm_trimmed_mean"})

# Parameters a rule gets when the operator names none; they are written into the metadata like any
# others, so an auditor never has to know these defaults.
DEFAULT_RULE_PARAMS: dict[str, dict[str, Any]] = {"trimmed_mean": {"trim_ratio": 0.2}, "krum": {"num_byzantine": 1}}


def with_default_params(rule_name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` completed with the rule's defaults (given values win)."""
    return {**DEFAULT_RULE_PARAMS.get(rule_name, {}), **params}


def check_rule(rule_name: str, params: Mapping[str, Any]) -> None:
    """`ValueError` naming the fix unless `rule_name` exists and `params` are complete and accepted.

    Checked before any round starts: parameter names against the rule's signature, then values by
    running the rule once on a few one-number updates (so a bad `trim_ratio` is refused up front).
    """
    if rule_name not in RULES:
        raise ValueError(f"unknown aggregation rule {rule_name!r}; known: {', '.join(sorted(RULES))}")
    accepted = _rule_parameters(rule_name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        known = ", ".join(sorted(accepted)) or "none"
        raise ValueError(f"rule {rule_name} takes no parameter {', '.join(unknown)} (its parameters: {known})")
    missing = sorted(name for name, p in accepted.items() if p.default is inspect.Parameter.empty and name not in params)
    if missing:
        hint = " ".join(f"--rule-param {name}=VALUE" for name in missing)
        raise ValueError(f"rule {rule_name} needs {', '.join(missing)}: give {hint}")
    byzantine = params.get("num_byzantine", 1)
    count = 2 * byzantine + 3 if type(byzantine) is int and 0 <= byzantine <= 100 else 5
    probes = [Update(f"{index:064x}", 1, {"w": torch.tensor([float(index)])}) for index in range(count)]
    try:
        aggregate(rule_name, probes, base={"w": torch.zeros(1)}, **params)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"rule {rule_name} refuses its parameters {dict(params)}: {exc}") from None


def rule_defaults(rule_name: str) -> dict[str, Any]:
    """The keyword parameters `rule_name` has defaults for (not `base`): what a round pins when the
    federation did not set them, so the metadata names every parameter the rule ran with."""
    return {
        name: parameter.default
        for name, parameter in _rule_parameters(rule_name).items()
        if parameter.default is not inspect.Parameter.empty
    }


def _rule_parameters(rule_name: str) -> dict[str, inspect.Parameter]:
    """The keyword parameters a rule takes from the operator (`base` is the round's, never theirs)."""
    return {
        name: parameter
        for name, parameter in inspect.signature(RULES[rule_name]).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "base"
    }


def aggregate(
    rule_name: str, updates: Sequence[Update], *, base: Mapping[str, torch.Tensor] | None = None, **params: Any
) -> Weights:
    """Runs the rule registered as `rule_name`; the name and params go in the round's metadata.

    `base` (the round's base weights) is handed to the rules that work on changes from it.
    """
    try:
        rule = RULES[rule_name]
    except KeyError:
        raise ValueError(f"unknown aggregation rule {rule_name!r}; known: {sorted(RULES)}") from None
    if rule_name in RULES_ON_CHANGES:
        if base is None:
            raise ValueError(f"{rule_name} works on changes from the round's base model: give base=")
        return rule(updates, base=base, **params)
    return rule(updates, **params)


def _ordered(updates: Sequence[Update]) -> list[Update]:
    """The updates sorted by (hash, num_samples), after checking they describe the same model."""
    if not updates:
        raise ValueError("cannot aggregate an empty list of updates")
    ordered = sorted(updates, key=lambda update: (update.update_hash, update.num_samples))
    reference = {name: tuple(tensor.shape) for name, tensor in ordered[0].tensors.items()}
    for update in ordered[1:]:
        shapes = {name: tuple(tensor.shape) for name, tensor in update.tensors.items()}
        if shapes != reference:
            raise ValueError(
                f"update {update.update_hash} has different tensor names or shapes; validate updates first"
            )
    return ordered


def _names(ordered: Sequence[Update]) -> list[str]:
    return sorted(ordered[0].tensors)


def _stack(ordered: Sequence[Update], name: str) -> np.ndarray:
    return np.stack([_as_float64(update.tensors[name]) for update in ordered])


def _as_float64(tensor: torch.Tensor) -> np.ndarray:
    """A float64 numpy copy: exact for float32 inputs, and never a view of the caller's tensor."""
    return np.array(tensor.detach().cpu().numpy(), dtype=np.float64, copy=True)


def _as_weights(arrays: Mapping[str, np.ndarray]) -> Weights:
    """Fresh C-ordered float32 tensors sorted by name (float64 → float32 rounds to nearest even)."""
    return {
        name: torch.from_numpy(np.array(arrays[name], dtype=np.float32, order="C")) for name in sorted(arrays)
    }
