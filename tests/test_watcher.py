"""The auditor's watcher on the in-process chain: confirmations, its own store, deterministic reports."""

from __future__ import annotations

import pytest
from support import DictStore

from ledger.audit.watch import WatchConfig, Watcher, encode_report
from ledger.chain.inprocess import start_in_process_ledger
from ledger.core.metadata import encode_genesis
from ledger.core.model import state_tensors
from ledger.tasks.digits import DIGITS_MLP
from ledger.tasks.spec import task_spec
from ledger.core.policy import FederationPolicy
from ledger.core.serialization import serialize_tensors
from ledger.store.base import BlobStoreError
from ledger.store.local import LocalBlobStore
from ledger.store.mirror import MirroredStore


class RefusingStore(DictStore):
    """A service that is down: every upload fails."""

    def put_as(self, name: str, data: bytes) -> None:
        raise BlobStoreError("the ledger service is unreachable")


@pytest.fixture(scope="module")
def genesis_chain():  # type: ignore[no-untyped-def]
    """One chain for the module: genesis committed, its blobs in a source store."""
    chain = start_in_process_ledger(0)
    source = DictStore()
    genesis = source.put(serialize_tensors(state_tensors(DIGITS_MLP.build_model(0))))
    metadata = source.put(encode_genesis(seed=0, policy=FederationPolicy(rule="fedavg"), task=task_spec(DIGITS_MLP, {})))
    chain.admin.commit_genesis(genesis, metadata)
    return chain, source, genesis


@pytest.fixture
def ledger(genesis_chain, request):  # type: ignore[no-untyped-def]
    """A new auditor (its own key) on the module's chain."""
    chain, source, genesis = genesis_chain
    auditor = chain.new_account(f"auditor-{request.node.name}")
    chain.admin.set_auditor(auditor.address, True)
    return chain, chain.client(auditor), source, genesis


def test_a_version_is_judged_only_once_it_is_confirmations_deep(ledger, tmp_path) -> None:
    chain, auditor, source, genesis = ledger
    own = LocalBlobStore(tmp_path / "own", max_bytes=1 << 20)
    watcher = Watcher(auditor, MirroredStore(own, source), config=WatchConfig(confirmations=3))

    genesis_block = watcher.mirror.record().versions[genesis].ref.block_number
    while chain.w3.eth.block_number < genesis_block + 2:
        chain.advance_time(1)
    assert watcher.run_once() == []  # only 2 blocks deep
    chain.advance_time(1)
    [attested] = watcher.run_once()

    assert attested.version.model_hash == genesis and attested.verdict.ok
    assert own.exists(genesis) and own.exists(attested.report_hash)  # its own copy of what it judged
    assert auditor.attestation_of(genesis, auditor.account.address).ok
    assert watcher.run_once() == []


def test_an_unreachable_service_does_not_stop_the_attestation(ledger, tmp_path) -> None:
    _, auditor, source, genesis = ledger
    own = LocalBlobStore(tmp_path / "own", max_bytes=1 << 20)
    watcher = Watcher(auditor, MirroredStore(own, source), publish=RefusingStore())

    [attested] = watcher.run_once()

    assert own.get(attested.report_hash) == encode_report(
        attested.verdict, auditor=auditor.account.address, ledger=auditor.address, chain_id=auditor.chain_id
    )  # the same bytes every time: a restart attests the same report hash


def test_a_watcher_needs_its_own_key(ledger) -> None:
    chain, _, source, _ = ledger
    reader = chain.admin.__class__(chain.w3, chain.address)

    with pytest.raises(ValueError, match="own key"):
        Watcher(reader, source)
