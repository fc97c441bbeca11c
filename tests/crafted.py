"""Crafted ledgers for judging the re-derivation without a chain: events and blobs built by hand.

`CraftedLedger` plays an aggregator that can be told to lie in any way: it writes the blobs into a
`DictStore` and the chain's record as the typed events `read_chain_facts` would return, so
`rederive` is judged purely (milliseconds a round). Updates are the genesis model moved by a
chosen L2 norm, so the pinned norm bound decides inclusion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from eth_utils import to_checksum_address
from support import DictStore

from ledger.audit.facts import ChainFacts
from ledger.cli.bench.synthetic import moved_update as moved  # re-exported for the tests
from ledger.chain import events
from ledger.core.aggregation import Update, aggregate
from ledger.core.merkle import merkle_root
from ledger.core.metadata import IncludedUpdate, RejectedUpdate, encode_genesis, encode_policy, encode_round
from ledger.core.model import state_tensors
from ledger.tasks.digits import DIGITS_MLP
from ledger.tasks.spec import task_spec
from ledger.core.policy import FederationPolicy
from ledger.core.reasons import RejectReason
from ledger.core.serialization import deserialize_tensors, serialize_tensors

NODES = [to_checksum_address(f"0x{0xabc0 + index:040x}") for index in range(6)]
POLICY = FederationPolicy(rule="fedavg", max_norm=1.0)
SPEC = task_spec(DIGITS_MLP, {})  # the task genesis pins: the digits MLP
MAX_BYTES = 1 << 20


def _reason_name(code: int) -> str:
    return RejectReason(code).name.lower() if code in RejectReason._value2member_map_ else "unknown"


def _ref(block: int, index: int = 0) -> events.LogRef:
    return events.LogRef(block_number=block, block_hash=f"{block:064x}", tx_hash=f"{block:032x}{index:032x}", log_index=index)


@dataclass
class Submitted:
    node: str
    blob: bytes
    num_samples: int = 100


@dataclass
class CraftedLedger:
    """Genesis at block 1, then one version per `round` call, each built as told."""

    policy: FederationPolicy = POLICY
    store: DictStore = field(default_factory=DictStore)
    versions: list[events.ModelCommitted] = field(default_factory=list)
    round_events: dict[str, tuple[tuple[events.UpdateSubmitted, ...], tuple[events.UpdateRejected, ...]]] = field(
        default_factory=dict
    )
    opened: dict[str, events.RoundOpened] = field(default_factory=dict)
    governance: list[events.LedgerEvent] = field(default_factory=list)
    attestation_quorum: int = 0
    block: int = 1

    def __post_init__(self) -> None:
        model = self.store.put(serialize_tensors(state_tensors(DIGITS_MLP.build_model(0))))
        metadata = self.store.put(encode_genesis(seed=0, policy=self.policy, task=SPEC))
        self.versions.append(events.ModelCommitted(_ref(1), 0, model, None, 0, None, 0, metadata))

    def tensors(self, model_hash: str) -> dict[str, torch.Tensor]:
        return deserialize_tensors(self.store.get(model_hash), max_bytes=MAX_BYTES)

    @property
    def latest(self) -> str:
        return self.versions[-1].model_hash

    def round(
        self,
        submitted: Sequence[Submitted],
        *,
        rejected: Mapping[int, RejectReason] | None = None,
        left_out: Sequence[int] = (),
        extra_included: Sequence[IncludedUpdate] = (),
        base: str | None = None,
        rule: str | None = None,
        params: Mapping[str, Any] | None = None,
        count_delta: int = 0,
        model_edit: float = 0.0,
    ) -> str:
        """Commit a version over `submitted`; returns its model hash.

        Honest by default: every submission not `rejected` is included and merged with the pinned
        rule. `left_out` drops submissions silently, `extra_included` lists more than submitted,
        `base`/`rule`/`params` override the latest version and the pinned rule, `count_delta`
        misstates the count and `model_edit` moves the committed model off the rule's output.
        """
        rejected = dict(rejected or {})
        if params is None:  # the pinned recipe, as an honest aggregator records it (the sample cap included)
            params = self.policy.rule_call_params() if rule in (None, self.policy.rule) else {}
        rule = rule or self.policy.rule
        params = dict(params)
        base = base or self.latest
        round_number = len(self.versions)
        opened = self.block + 1
        subs = tuple(
            events.UpdateSubmitted(_ref(opened + 1 + i), round_number, s.node, self.store.put(s.blob), s.num_samples)
            for i, s in enumerate(submitted)
        )
        refusals = tuple(
            events.UpdateRejected(_ref(opened + 1 + len(subs) + i), round_number, subs[k].node, subs[k].update_hash, int(reason))
            for i, (k, reason) in enumerate(sorted(rejected.items()))
        )
        included = [
            IncludedUpdate(s.update_hash, s.node, s.num_samples)
            for k, s in enumerate(subs)
            if k not in rejected and k not in left_out
        ] + list(extra_included)
        updates = [
            Update(item.update_hash, item.num_samples, deserialize_tensors(self.store.get(item.update_hash), max_bytes=MAX_BYTES))
            for item in included
        ]
        weights = aggregate(rule, updates, **params)
        if model_edit:
            first = sorted(weights)[0]
            weights[first].view(-1)[0] += model_edit
        model = self.store.put(serialize_tensors(weights))
        metadata = self.store.put(
            encode_round(
                round_number=round_number,
                base_model_hash=base,
                task_spec=SPEC.spec_hash,
                rule=rule,
                rule_params=params,
                included=included,
                rejected=[RejectedUpdate(r.update_hash, r.node, r.reason_code, _reason_name(r.reason_code)) for r in refusals],
                metrics={"test_accuracy": 0.5},
            )
        )
        root = merkle_root(bytes.fromhex(item.update_hash) for item in included).hex()
        self.block = opened + len(subs) + len(refusals) + 1
        self.versions.append(
            events.ModelCommitted(
                _ref(self.block), round_number, model, base, len(self.versions), root, len(included) + count_delta, metadata
            )
        )
        self.round_events[model] = (subs, refusals)
        self.opened[model] = events.RoundOpened(_ref(opened), round_number, base, 2**40, 1)
        return model

    def _next(self) -> events.LogRef:
        self.block += 1
        return _ref(self.block)

    def change_policy(self, policy: FederationPolicy) -> str:
        """`setPolicy`: from the next round on, `policy` (its blob stored); returns the blob's hash."""
        policy_hash = self.store.put(encode_policy(policy))
        self.governance.append(events.PolicyChanged(self._next(), len(self.versions), policy_hash))
        return policy_hash

    def set_auditor(self, auditor: str) -> None:
        self.governance.append(events.AuditorSet(self._next(), auditor, True))

    def attest(self, model_hash: str, auditor: str, *, ok: bool) -> None:
        self.governance.append(events.VersionAttested(self._next(), model_hash, auditor, ok, "ab" * 32))

    def facts(self, model_hash: str) -> ChainFacts:
        committed = {version.model_hash: version for version in self.versions}
        submissions, rejections = self.round_events.get(model_hash, ((), ()))
        block = committed[model_hash].ref.block_number
        return ChainFacts(
            committed[model_hash],
            committed,
            submissions,
            rejections,
            opened=self.opened.get(model_hash),
            governance=tuple(e for e in self.governance if e.ref.block_number <= block),
            attestation_quorum=self.attestation_quorum,
        )
