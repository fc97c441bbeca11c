"""Demo-only lying aggregators, so the demo and tests can show auditors catching them.

`LyingAggregator` pins the honest policy at genesis, runs the honest round loop, and lies in one
way (`MODES`), each a way an aggregator could cheat the federation while still committing on chain:

- model:        commits a model that is not its rule's output (one weight nudged)
- root:         includes a never-submitted update (the base as a zero change: a no_change too) in its Merkle root
- count:        commits an included count that does not match the root
- false-reject: rejects a valid update, claiming it exceeds the norm bound
- censor:       leaves a valid submission out without rejecting it
- over-norm:    validates with no norm bound, so an update over the pinned bound is merged
- rule:         aggregates with Krum (num_byzantine=0: one node's model) instead of the pinned rule
- fork:         opens the round on an older version than the latest it could build on

The honest path (`aggregator.coordinator`) is untouched: every lie is an override here (of the
round's decision, `_decide`, so the resumable round loop records and commits the lie as its own).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import Any

import torch

from ledger.chain import events
from ledger.chain.client import LedgerClient, TxResult
from ledger.chain.rounds import buildable_versions
from ledger.core.aggregation import Update, Weights, aggregate
from ledger.core.encoding import complete_with_base, decode_update, encode_update
from ledger.core.reasons import RejectReason
from ledger.core.manifest import trainable_part, with_frozen
from ledger.core.serialization import serialize_tensors
from ledger.core.task import Examples
from ledger.store.base import BlobStore

from aggregator.coordinator import Aggregator, AggregatorConfig, _Decision

MODES = ("model", "root", "count", "false-reject", "censor", "over-norm", "rule", "fork")


class LyingAggregator(Aggregator):
    """An aggregator that commits on chain like an honest one, but lies as `mode` says."""

    def __init__(
        self, client: LedgerClient, store: BlobStore, test_split: Examples, config: AggregatorConfig, *, mode: str
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown lie {mode!r}; one of {', '.join(MODES)}")
        super().__init__(client, store, test_split, config)
        self.mode = mode
        self.pinned = config  # what genesis pins; the rounds may run with another configuration
        if mode == "over-norm":
            self.config = dataclasses.replace(config, max_norm=sys.float_info.max)  # no bound a real update reaches
        elif mode == "rule":
            self.config = dataclasses.replace(config, rule="krum", rule_params={"num_byzantine": 0})
        if mode == "count":
            self.client = _CountInflating(client)  # type: ignore[assignment]

    def follow_policy(self, round_number: int) -> None:
        """A liar keeps the rule and limits it chose (`over-norm`, `rule`): catching that is the auditors' job."""

    def ensure_genesis(self) -> str:
        lying, self.config = self.config, self.pinned
        try:
            return super().ensure_genesis()
        finally:
            self.config = lying

    def latest_model(self) -> str:
        """The latest version the gate lets it build on (its own lies are failed by auditors, so it
        builds past them); fork: the one before that, when there is one to fork from."""
        latest = super().latest_model()
        self.await_verdicts(latest)
        versions = [event.model_hash for event in buildable_versions(self.client)]
        if self.mode == "fork" and len(versions) >= 2:
            return versions[-2]
        return versions[-1] if versions else latest

    def _decide(
        self,
        round_number: int,
        submissions: list[events.UpdateSubmitted],
        recorded: Mapping[str, int],
        base: Mapping[str, torch.Tensor],
        store: BlobStore,
    ) -> _Decision:
        """The honest decision, then the lie: what `_finish` records, stores and commits."""
        decision = super()._decide(round_number, submissions, recorded, base, store)
        trainable = trainable_part(base, self.spec)  # what updates carry, and the merge is over
        accepted, rejected = list(decision.accepted), list(decision.rejected)
        weights: Weights | None = None
        if self.mode in ("false-reject", "censor") and len(accepted) >= 2:
            victim = accepted.pop(0)
            if self.mode == "false-reject":
                rejected.append((victim, RejectReason.NORM_TOO_LARGE, "(a lie: it is within the bound)"))
            weights = with_frozen(self._merge(accepted, trainable), base, self.spec)
        elif self.mode == "root" and accepted:
            assert self.client.account is not None
            # An update nobody submitted: the base itself, as a zero change in the pinned encoding.
            stranger = self.store.put(encode_update(trainable, trainable, self.config.encoding))
            accepted.append(events.UpdateSubmitted(events.LogRef(0, "", "", 0), round_number, self.client.account.address, stranger, 1))
            weights = with_frozen(self._merge(accepted, trainable), base, self.spec)
        elif self.mode == "model" and decision.weights is not None:
            weights = {name: tensor.clone() for name, tensor in decision.weights.items()}
            first = sorted(trainable)[0]
            weights[first].view(-1)[0] += 1e-3
        if weights is None:
            return decision
        return dataclasses.replace(
            decision, accepted=tuple(accepted), rejected=tuple(rejected), weights=weights, model_blob=serialize_tensors(weights)
        )

    def _merge(self, submissions: list[events.UpdateSubmitted], base: Mapping[str, torch.Tensor]) -> Weights:
        """The rule over `submissions` with the parameters the round records (the sample cap
        included), each decoded in the pinned encoding against the trainable `base`, as the intake does."""
        updates = []
        for submission in submissions:
            blob = self.store.get(submission.update_hash)
            decoded = decode_update(blob, base, self.config.encoding, max_bytes=self.config.max_update_bytes)
            updates.append(Update(submission.update_hash, submission.num_samples, complete_with_base(decoded.tensors, base)))
        return aggregate(self.config.rule, updates, base=base, **self.config.policy.rule_call_params())


class _CountInflating:
    """The aggregator's client, but `finalizeRound` claims one more included update than the root holds."""

    def __init__(self, client: LedgerClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def finalize_round(self, round: int, model_hash: Any, included_root: Any, included_count: int, metadata_hash: Any) -> TxResult:
        return self._client.finalize_round(round, model_hash, included_root, included_count + 1, metadata_hash)

