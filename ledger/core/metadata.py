"""The metadata blob pinned beside every model version: how it was made and how good it is.

One codec, used by the aggregator (which writes it), the auditor and the indexer (which read it):
values in, canonical JSON bytes out (`encode_genesis`, `encode_round`), and back (`decode`), with
every field validated. The blob's SHA-256 goes on chain in `ModelCommitted`, so the chain itself
says which rule (and parameters) built each version from which updates, and an auditor can re-run
exactly that. The genesis record pins the federation's policy and its task spec (model manifest,
code hash, hyperparameters); each round record names that spec by its hash. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.core.hashing import is_sha256_hex
from ledger.core.policy import FederationPolicy, PolicyError, epsilon_text
from ledger.core.safe_json import (
    UntrustedJsonError,
    canonical_json,
    parse_untrusted_json,
)
from ledger.core.task_spec import TaskSpec, TaskSpecError

FORMAT = "fedledger-model-metadata/3"
POLICY_FORMAT = "fedledger-policy/1"  # the blob `setPolicy(policyHash)` pins when the policy changes


class MetadataError(ValueError):
    """Bytes that are not a metadata record in our format; the message names the field at fault."""


@dataclass(frozen=True)
class IncludedUpdate:
    update_hash: str
    node: str
    num_samples: int


@dataclass(frozen=True)
class RejectedUpdate:
    update_hash: str
    node: str
    reason_code: int
    reason: str


@dataclass(frozen=True)
class RuleSpec:
    """An aggregation rule and the parameters it was run with."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GenesisRecord:
    """Version 0: which task, its model initialised from which seed, under which federation policy."""

    seed: int
    policy: FederationPolicy
    task: TaskSpec

    kind = "genesis"


@dataclass(frozen=True)
class RoundRecord:
    """A round's version: its base, the rule, the included and rejected updates, the metrics, and
    (when the federation trains with DP) each node's cumulative ε as the accountant verified it."""

    round: int
    base_model: str
    task_spec: str  # the SHA-256 of the task spec pinned at genesis (`TaskSpec.spec_hash`)
    rule: RuleSpec
    included: tuple[IncludedUpdate, ...]
    rejected: tuple[RejectedUpdate, ...]
    metrics: Mapping[str, Any]
    privacy: Mapping[str, str] | None = None

    kind = "round"


MetadataRecord = GenesisRecord | RoundRecord


# --------------------------------------------------------------------------- writing


def encode_genesis(*, seed: int, policy: FederationPolicy, task: TaskSpec) -> bytes:
    return canonical_json(
        {"format": FORMAT, "kind": "genesis", "seed": seed, "policy": policy.to_json(), "task": task.to_json()}
    )


def encode_round(
    *,
    round_number: int,
    base_model_hash: str,
    task_spec: str,
    rule: str,
    rule_params: Mapping[str, Any],
    included: Sequence[IncludedUpdate],
    rejected: Sequence[RejectedUpdate],
    metrics: Mapping[str, float | int],
    privacy: Mapping[str, str] | None = None,
) -> bytes:
    """Updates are listed by hash, the order the rules combine them in. `privacy` maps each node
    whose claim the accountant verified this round to its cumulative ε (absent without DP)."""
    extra = {} if privacy is None else {"privacy": dict(privacy)}
    return canonical_json(
        {
            **extra,
            "format": FORMAT,
            "kind": "round",
            "round": round_number,
            "base_model": base_model_hash,
            "task_spec": task_spec,
            "rule": {"name": rule, "params": dict(rule_params)},
            "included": [
                {"update_hash": u.update_hash, "node": u.node, "num_samples": u.num_samples}
                for u in sorted(included, key=lambda u: u.update_hash)
            ],
            "rejected": [
                {"update_hash": r.update_hash, "node": r.node, "reason_code": r.reason_code, "reason": r.reason}
                for r in sorted(rejected, key=lambda r: r.update_hash)
            ],
            "metrics": dict(metrics),
        }
    )


def encode_policy(policy: FederationPolicy) -> bytes:
    """The blob an admin stores and pins with `setPolicy` to change the policy from the next round on."""
    return canonical_json({"format": POLICY_FORMAT, "policy": policy.to_json()})


# --------------------------------------------------------------------------- reading


def decode_policy(blob: bytes) -> FederationPolicy:
    """The policy in a `setPolicy` blob; `MetadataError` naming what is wrong for anything else."""
    document = _document(blob, POLICY_FORMAT, "policy")
    try:
        return FederationPolicy.from_json(document.get("policy"))
    except PolicyError as exc:
        raise MetadataError(str(exc)) from None


def decode(blob: bytes) -> MetadataRecord:
    """The record in `blob`; `MetadataError` naming what is wrong for anything else."""
    document = _document(blob, FORMAT, "metadata")
    kind = document.get("kind")
    if kind == "genesis":
        return _genesis(document)
    if kind == "round":
        return _round(document)
    raise MetadataError(f"'kind' must be 'genesis' or 'round', got {kind!r}")


def decode_genesis(blob: bytes) -> GenesisRecord:
    """The genesis record in `blob`; `MetadataError` for anything else, a round record included."""
    record = decode(blob)
    if not isinstance(record, GenesisRecord):
        raise MetadataError(f"the metadata is a {record.kind} record, not a genesis record")
    return record


def _document(blob: bytes, format_name: str, what: str) -> dict[str, Any]:
    """The JSON object in `blob` if it declares `format_name`; `MetadataError` otherwise."""
    try:
        document = parse_untrusted_json(blob)
    except UntrustedJsonError as exc:
        raise MetadataError(f"the {what} is not usable JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != format_name:
        actual = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise MetadataError(f"the {what} is not a {format_name} object (format {actual!r})")
    return document


def _genesis(document: Mapping[str, Any]) -> GenesisRecord:
    seed = document.get("seed")
    if type(seed) is not int:
        raise MetadataError(f"a genesis record needs an integer seed, got {seed!r}")
    try:
        policy = FederationPolicy.from_json(document.get("policy"))
    except PolicyError as exc:
        raise MetadataError(f"a genesis record pins the federation's policy: {exc}") from None
    try:
        task = TaskSpec.from_json(document.get("task"))
    except TaskSpecError as exc:
        raise MetadataError(f"a genesis record pins the federation's task: {exc}") from None
    return GenesisRecord(seed=seed, policy=policy, task=task)


def _round(document: Mapping[str, Any]) -> RoundRecord:
    if type(document.get("round")) is not int:
        raise MetadataError("'round' must be an integer")
    if not is_sha256_hex(document.get("base_model")):
        raise MetadataError("'base_model' must be a SHA-256 hex digest")
    if not is_sha256_hex(document.get("task_spec")):
        raise MetadataError("'task_spec' must be a SHA-256 hex digest")
    rule = document.get("rule")
    if not isinstance(rule, dict) or not isinstance(rule.get("name"), str) or not isinstance(rule.get("params"), dict):
        raise MetadataError("'rule' must be an object with a string 'name' and an object 'params'")
    included = document.get("included")
    if not isinstance(included, list) or not included:
        raise MetadataError("'included' must be a non-empty list")
    for index, item in enumerate(included):
        if not (
            isinstance(item, dict)
            and is_sha256_hex(item.get("update_hash"))
            and isinstance(item.get("node"), str)
            and type(item.get("num_samples")) is int
            and item["num_samples"] > 0
        ):
            raise MetadataError(
                f"included[{index}] must have a SHA-256 'update_hash', a 'node' and a positive 'num_samples'"
            )
    rejected = document.get("rejected", [])
    if not isinstance(rejected, list):
        raise MetadataError("'rejected' must be a list")
    for index, item in enumerate(rejected):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("update_hash"), str)
            and isinstance(item.get("node"), str)
            and type(item.get("reason_code")) is int
        ):
            raise MetadataError(f"rejected[{index}] must have an 'update_hash', a 'node' and an integer 'reason_code'")
    metrics = document.get("metrics", {})
    if not isinstance(metrics, dict):
        raise MetadataError("'metrics' must be an object")
    privacy = document.get("privacy")
    if privacy is not None and not (
        isinstance(privacy, dict) and all(isinstance(eps, str) and _is_epsilon(eps) for eps in privacy.values())
    ):
        raise MetadataError("'privacy' must map nodes to ε as 6-decimal text")
    return RoundRecord(
        round=document["round"],
        base_model=document["base_model"],
        task_spec=document["task_spec"],
        rule=RuleSpec(rule["name"], rule["params"]),
        included=tuple(IncludedUpdate(u["update_hash"], u["node"], u["num_samples"]) for u in included),
        rejected=tuple(
            RejectedUpdate(r["update_hash"], r["node"], r["reason_code"], str(r.get("reason", ""))) for r in rejected
        ),
        metrics=metrics,
        privacy=privacy,
    )


def _is_epsilon(text: str) -> bool:
    try:
        return epsilon_text(text) == text
    except PolicyError:
        return False
