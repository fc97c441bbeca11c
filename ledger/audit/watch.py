"""An auditor's daemon: follow the chain's versions, re-derive each, keep the report, attest on chain.

For each `ModelCommitted` at least `confirmations` blocks deep, the watcher takes the chain's
record of it (`facts_from_record` over its own `ChainMirror`, which reads only new blocks), re-derives the version with the same code as `fedledger audit verify`
(`rederive`), stores its JSON report in its own store (and publishes it, if told where), and sends
`attestVersion(modelHash, ok, sha256(report))` with its own key. It trusts the chain and the bytes
it re-hashes, nothing else: not the aggregator's store's word, not any index.

Exactly once per version across restarts, with the chain as the journal: before deciding, the
watcher waits for any transaction its key already has in flight, then asks the contract whether it
attested the version (`attestationOf`). A restart after any step re-derives (deterministic: the
same report bytes, so the same hash) and attests only what is not attested yet. `on_step` is told
each step as it completes (`STEPS`), for logs and for tests that kill the process there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger.audit.checks import DEFAULT_MAX_BYTES
from ledger.audit.facts import facts_from_record
from ledger.audit.rederive import rederive
from ledger.audit.verdict import Verdict
from ledger.chain import events
from ledger.chain.client import LedgerClient
from ledger.chain.follow import NewHeads
from ledger.chain.mirror import ChainMirror
from ledger.core.polling import poll_until
from ledger.core.safe_json import canonical_json
from ledger.store.base import BlobStore, BlobStoreError

log = logging.getLogger(__name__)

_STOP_CHECK_SECONDS = 0.5

REPORT_FORMAT = "fedledger-audit-report/1"
STEPS = ("confirmed", "rederived", "stored", "sent", "mined")


def encode_report(verdict: Verdict, *, auditor: str, ledger: str, chain_id: int) -> bytes:
    """The auditor's report: canonical JSON with nothing that varies run to run (its hash goes on chain)."""
    return canonical_json(
        {"format": REPORT_FORMAT, "auditor": auditor, "ledger": ledger, "chain_id": chain_id, "verdict": verdict.to_json()}
    )


@dataclass(frozen=True)
class WatchConfig:
    confirmations: int = 0
    poll_seconds: float = 0.5
    from_block: int = 0
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if self.confirmations < 0 or self.poll_seconds <= 0 or self.from_block < 0:
            raise ValueError("confirmations and from_block must be 0 or more, poll_seconds positive")


@dataclass(frozen=True)
class Attested:
    """One attestation this watcher sent."""

    version: events.ModelCommitted
    verdict: Verdict
    report_hash: str
    tx_hash: str
    block_number: int
    rederive_seconds: float


Step = Callable[[str, events.ModelCommitted], None]


class Watcher:
    """One auditor (`client` signs with its key) judging every version from `store`."""

    def __init__(
        self,
        client: LedgerClient,
        store: BlobStore,
        *,
        publish: BlobStore | None = None,
        config: WatchConfig = WatchConfig(),
        on_step: Step | None = None,
    ) -> None:
        if client.account is None:
            raise ValueError("a watcher attests with its own key: give it a signing client")
        self.client = client
        self.auditor = client.account.address
        self.store = store
        self.publish = publish
        self.config = config
        self.on_step = on_step
        self.mirror = ChainMirror(client.w3, client.address, from_block=config.from_block)
        self.quorum = client.attestation_quorum()
        self._attested: set[str] | None = None  # read from the chain on the first pass

    # ---------------------------------------------------------------- what is left to do

    def confirmed_versions(self) -> list[events.ModelCommitted]:
        """Every version committed at least `confirmations` blocks below the head, in lineage order."""
        record = self.mirror.record()
        safe = record.block_number - self.config.confirmations
        return sorted((v for v in record.versions.values() if v.ref.block_number <= safe), key=lambda v: v.version)

    def attested_by_me(self) -> set[str]:
        """The versions this auditor's key attested, from the chain's `VersionAttested` events."""
        return {a.model_hash for a in self.mirror.record().attestations if a.auditor == self.auditor}

    def pending(self) -> list[events.ModelCommitted]:
        if self._attested is None:
            self._wait_for_in_flight()
            self._attested = self.attested_by_me()
        return [v for v in self.confirmed_versions() if v.model_hash not in self._attested]

    # ---------------------------------------------------------------- one version

    def attest(self, version: events.ModelCommitted) -> Attested | None:
        """Re-derive `version`, keep the report, attest; None if this auditor had already attested it."""
        self._step("confirmed", version)
        started = time.perf_counter()
        facts = facts_from_record(self.mirror.record(), version.model_hash, attestation_quorum=self.quorum)
        if facts is None:  # gone in a reorg deeper than our confirmations
            log.warning("version %s is no longer committed on chain; skipping it", version.model_hash)
            return None
        verdict = rederive(facts, self.store, max_bytes=self.config.max_bytes)
        seconds = time.perf_counter() - started
        self._step("rederived", version)
        report = encode_report(verdict, auditor=self.auditor, ledger=self.client.address, chain_id=self.client.chain_id)
        report_hash = self.store.put(report)
        self._publish(report_hash, report)
        self._step("stored", version)

        self._wait_for_in_flight()
        if self.client.attestation_of(version.model_hash, self.auditor).attested:
            log.info("version %d (%s) already attested by %s", version.version, version.model_hash, self.auditor)
            self._remember(version)
            return None
        result = self.client.attest_version(
            version.model_hash, verdict.ok, report_hash, on_sent=lambda _tx: self._step("sent", version)
        )
        self._remember(version)
        self._step("mined", version)
        log.info("attested version %d (%s): %s", version.version, version.model_hash, verdict.summary())
        return Attested(version, verdict, report_hash, result.tx_hash, result.block_number, seconds)

    # ---------------------------------------------------------------- driving

    def run_once(self, on_attested: Callable[[Attested], None] | None = None) -> list[Attested]:
        """Attest every confirmed version not attested yet, in lineage order."""
        done = []
        for version in self.pending():
            attested = self.attest(version)
            if attested is not None:
                done.append(attested)
                if on_attested is not None:
                    on_attested(attested)
        return done

    def follow(self, stop: threading.Event, on_attested: Callable[[Attested], None] | None = None) -> None:
        """`run_once` at each new block until `stop` is set.

        Woken like every other waiting role (`ledger.chain.follow.NewHeads`: a newHeads subscription
        where the node offers one, else `eth_blockNumber` every `poll_seconds`); `stop` is looked at
        at least every `_STOP_CHECK_SECONDS`.
        """
        heads = NewHeads(self.client.w3, poll_seconds=self.config.poll_seconds)
        judged_at: int | None = None  # the head the last pass saw
        try:
            while not stop.is_set():
                head = heads.head()
                if head != judged_at:
                    self.run_once(on_attested)
                    judged_at = head
                heads.wait(after=head, timeout=_STOP_CHECK_SECONDS)
        finally:
            heads.close()

    # ---------------------------------------------------------------- plumbing

    def _step(self, name: str, version: events.ModelCommitted) -> None:
        if self.on_step is not None:
            self.on_step(name, version)

    def _remember(self, version: events.ModelCommitted) -> None:
        if self._attested is not None:
            self._attested.add(version.model_hash)

    def _publish(self, report_hash: str, report: bytes) -> None:
        """Put the report where readers look for blobs (the ledger service); its hash is on chain either way."""
        if self.publish is None:
            return
        try:
            self.publish.put_as(report_hash, report)
        except (BlobStoreError, OSError) as exc:
            log.warning("could not publish report %s (it stays in this auditor's own store): %s", report_hash, exc)

    def _wait_for_in_flight(self) -> None:
        """Until every transaction this key sent is mined: only then does the chain say what was attested."""
        eth: Any = self.client.w3.eth

        def settled() -> bool:
            return int(eth.get_transaction_count(self.auditor, "pending")) == int(eth.get_transaction_count(self.auditor, "latest"))

        poll_until(settled, timeout=self.client.receipt_timeout, interval=0.1, what=f"the transactions of {self.auditor} to be mined")
