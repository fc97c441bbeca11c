"""Garbage collection of the blob folder: what no chain event pins goes after its grace period."""

from __future__ import annotations

import json
import os
import time

import pytest

from ledger.api.gc import GcPolicy, PinnedHashes, collect_garbage
from ledger.chain.inprocess import InProcessLedger
from ledger.store.local import LocalBlobStore

HOUR = 3600.0


def _age(store: LocalBlobStore, name: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(store.path_for(name), (then, then))


def test_unpinned_blobs_go_after_the_grace_period_and_pinned_ones_stay(ledger_chain: InProcessLedger, tmp_path) -> None:
    store = LocalBlobStore(tmp_path / "blobs", max_bytes=1 << 20)
    admin, node = ledger_chain.admin, ledger_chain.nodes[0]
    genesis, metadata = store.put(b"genesis model"), store.put(b"genesis metadata")
    submitted, rejected = store.put(b"an update on chain"), store.put(b"a rejected update")
    orphan, fresh = store.put(b"uploaded, never submitted"), store.put(b"uploaded a minute ago")
    policy, report = store.put(b"a policy blob"), store.put(b"an auditor's report")
    admin.commit_genesis(genesis, metadata)
    admin.set_policy(policy)
    auditor = ledger_chain.client(ledger_chain.new_account("auditor"))
    admin.set_auditor(auditor.account.address, True)
    auditor.attest_version(genesis, True, report)
    admin.open_round(1, genesis, ledger_chain.now() + 600, 1)
    node.submit_update(1, submitted, 10)
    ledger_chain.nodes[1].submit_update(1, rejected, 10)
    admin.reject_update(1, ledger_chain.nodes[1].account.address, 8)
    for name in (genesis, metadata, submitted, rejected, orphan, policy, report):
        _age(store, name, 48 * HOUR)
    _age(store, fresh, 60)
    stale_temp = store.path_for(orphan).parent / ".deadbeef-crashed.tmp"
    live_temp = store.path_for(orphan).parent / ".cafef00d-uploading.tmp"
    for temp in (stale_temp, live_temp):
        temp.write_bytes(b"part of an upload")
    os.utime(stale_temp, (time.time() - 2 * HOUR,) * 2)
    pinned = PinnedHashes(admin)

    gc = collect_garbage(store, pinned, GcPolicy(grace_seconds=24 * HOUR, temp_grace_seconds=HOUR))

    assert gc.deleted == (orphan,)
    assert gc.deleted_bytes == len(b"uploaded, never submitted")
    assert (gc.temp_files_deleted, gc.kept_pinned, gc.kept_young) == (1, 6, 1)
    assert not store.exists(orphan) and not stale_temp.exists()
    assert all(store.exists(name) for name in (genesis, metadata, submitted, rejected, fresh, policy, report))
    assert live_temp.exists()

    # The next pass reads only new blocks: a hash pinned since then is kept, even once old.
    ledger_chain.nodes[2].submit_update(1, fresh, 10)
    _age(store, fresh, 48 * HOUR)
    again = collect_garbage(store, pinned, GcPolicy(grace_seconds=24 * HOUR))
    assert again.deleted == () and store.exists(fresh)
    assert again.pinned_through_block == int(ledger_chain.w3.eth.block_number)


@pytest.mark.devnet
def test_fedledger_api_gc_deletes_what_the_chain_does_not_pin(tmp_path, capsys) -> None:
    from ledger.chain.client import LedgerClient
    from ledger.chain.connect import connect
    from ledger.chain.devkeys import dev_account
    from ledger.chain.devnet import throwaway_devnet
    from ledger.cli.main import main

    store = LocalBlobStore(tmp_path / "blobs", max_bytes=1 << 20)
    genesis, metadata, orphan = store.put(b"genesis"), store.put(b"metadata"), store.put(b"orphan")
    for name in (genesis, metadata, orphan):
        _age(store, name, 48 * HOUR)
    with throwaway_devnet() as devnet:
        admin, _ = LedgerClient.deploy(connect(devnet.rpc_url), dev_account(0))
        admin.commit_genesis(genesis, metadata)
        chain = ["--rpc-url", devnet.rpc_url, "--contract", admin.address, "--blobs-dir", str(store.root)]

        assert main(["api", "gc", *chain, "--json"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["deleted"] == [orphan] and report["kept_pinned"] == 2
    assert store.exists(genesis) and store.exists(metadata) and not store.exists(orphan)


@pytest.mark.parametrize("grace", [{"grace_seconds": float("nan")}, {"temp_grace_seconds": float("nan")}, {"grace_seconds": -1.0}])
def test_a_grace_period_that_is_not_a_number_is_refused_rather_than_deleting_fresh_uploads(grace: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="grace periods must be non-negative"):
        GcPolicy(**grace)
