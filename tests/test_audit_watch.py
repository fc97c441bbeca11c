"""Auditors on a real anvil: watcher processes re-derive every version, attest it, and hold the gate.

- Two `fedledger audit watch` processes, each with its own key and its own folder, follow a ledger
  deployed with an attestation quorum of 2, while a lying aggregator (`aggregator.misbehaviour`)
  commits one lie per mode: each lie is attested failed by both, naming the finding, within a few
  blocks, and no round can open on it. Node updates are small crafted blobs (no training).
- A watcher SIGKILLed at every step of its work, then restarted, attests each version exactly once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from crafted import moved

from aggregator.coordinator import Aggregator, AggregatorConfig
from aggregator.misbehaviour import MODES, LyingAggregator
from ledger.audit.watch import STEPS
from ledger.chain import events
from ledger.chain.client import LedgerClient
from ledger.chain.connect import connect
from ledger.chain.deploy import deploy
from ledger.chain.devkeys import dev_account
from ledger.chain.errors import BaseNotAttested
from ledger.tasks.digits import DIGITS_MLP
from ledger.core.polling import poll_until
from ledger.core.serialization import deserialize_tensors
from ledger.store.local import LocalBlobStore

pytestmark = pytest.mark.devnet

MAX_BYTES = 1 << 20
NODES = 5
AUDITORS = (6, 7)  # dev account indexes
ATTEST_SECONDS = 60.0
EXPECTED = {
    "model": "rederived_mismatch",
    "root": "not_submitted,included_invalid",  # the stranger is the base itself: no_change too
    "count": "count_mismatch",
    "false-reject": "rejection_unfounded",
    "censor": "censored_submission",
    "over-norm": "included_invalid",
    "rule": "rule_not_pinned",
    "fork": "forked_lineage",
}
CONFIG = AggregatorConfig(max_norm=1.0, min_updates=1, round_seconds=3600, workers=1)
KILLABLE = Path(__file__).with_name("killable_watcher.py")


def _watch_args(rpc_url: str, contract: str, key: int, blobs: Path, auditor_dir: Path) -> list[str]:
    return [
        "--rpc-url", rpc_url, "--contract", contract, "--dev-key", str(key),
        "--blobs-dir", str(blobs), "--auditor-dir", str(auditor_dir), "--poll-seconds", "0.1",
    ]  # fmt: skip


def _submit_round(aggregator: Aggregator, nodes: list[LedgerClient], store: LocalBlobStore, *, oversized: bool = False):  # type: ignore[no-untyped-def]
    """Open a round, have every node submit a small crafted update (one over the norm bound if
    `oversized`), and close it."""
    info = aggregator.open_round()
    base = deserialize_tensors(store.get(info.base_model_hash), max_bytes=MAX_BYTES)
    for index, node in enumerate(nodes):
        norm = 5.0 if oversized and index == len(nodes) - 1 else 0.3
        node.submit_update(info.round, store.put(moved(base, seed=100 * info.round + index, norm=norm)), 100 + index)
    return aggregator.close_round(info.round)


def _report(auditor_dir: Path, report_hash: str) -> dict:  # type: ignore[type-arg]
    return json.loads(LocalBlobStore(auditor_dir, max_bytes=MAX_BYTES).get(report_hash))


@pytest.fixture
def federation(anvil_devnet, tmp_path):  # type: ignore[no-untyped-def]
    def start(quorum: int) -> tuple[LedgerClient, list[LedgerClient], LocalBlobStore]:
        w3 = connect(anvil_devnet.rpc_url)
        admin, _, _ = deploy(w3, dev_account(0), attestation_quorum=quorum)
        nodes = [admin.as_account(dev_account(i + 1)) for i in range(NODES)]
        for node in nodes:
            admin.register_node(node.account.address)
        for key in AUDITORS:
            admin.set_auditor(dev_account(key).address, True)
        return admin, nodes, LocalBlobStore(tmp_path / "blobs", max_bytes=MAX_BYTES)

    return start


@pytest.fixture
def watchers(anvil_devnet, tmp_path) -> Iterator:  # type: ignore[type-arg]
    processes: list[subprocess.Popen[bytes]] = []

    def start(contract: str) -> dict[str, Path]:
        """One watcher process per auditor key; returns each auditor's own folder, by address."""
        folders = {}
        for key in AUDITORS:
            folder = tmp_path / f"auditor-{key}"
            args = _watch_args(anvil_devnet.rpc_url, contract, key, tmp_path / "blobs", folder)
            log = (tmp_path / f"watch-{key}.log").open("wb")
            processes.append(
                subprocess.Popen([sys.executable, "-m", "ledger.cli", "audit", "watch", *args], stdout=log, stderr=subprocess.STDOUT)
            )
            folders[dev_account(key).address] = folder
        return folders

    yield start
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=20)


def test_two_watchers_catch_every_lie_and_no_round_builds_on_one(federation, watchers, tmp_path) -> None:
    admin, nodes, store = federation(quorum=2)
    folders = watchers(admin.address)
    test_split = DIGITS_MLP.bundled_data().test
    honest = Aggregator(admin, store, test_split, CONFIG)
    honest.ensure_genesis()
    _submit_round(honest, nodes, store)  # opens on genesis once both auditors attested it ok

    caught: dict[str, list[str]] = {}
    for mode in MODES:
        liar = LyingAggregator(admin, store, test_split, CONFIG, mode=mode)
        result = _submit_round(liar, nodes, store, oversized=mode == "over-norm")
        lie = result.model_hash
        assert lie is not None

        counts = poll_until(
            lambda: (c := admin.attestation_counts(lie)).failed + c.ok == len(AUDITORS) and c,
            timeout=ATTEST_SECONDS,
            interval=0.1,
            what=f"both auditors to attest the {mode} lie",
        )
        assert (counts.ok, counts.failed) == (0, 2), mode
        verdicts = admin.events(event_type=events.VersionAttested, topic_filters=["0x" + lie])
        committed = admin.model_of(lie)
        assert committed is not None
        for verdict in verdicts:
            report = _report(folders[verdict.auditor], verdict.report_hash)
            assert report["auditor"] == verdict.auditor and report["verdict"]["model_hash"] == lie
            caught.setdefault(mode, []).append(",".join(f["kind"] for f in report["verdict"]["findings"]))
        assert max(v.ref.block_number for v in verdicts) - admin.events(event_type=events.ModelCommitted, topic_filters=[None, "0x" + lie])[0].ref.block_number <= 4

        with pytest.raises(BaseNotAttested) as refused:
            admin.open_round(admin.counters().last_round + 1, lie, honest.client.w3.eth.get_block("latest")["timestamp"] + 600, 1)
        assert refused.value.unresolvedFailures == 2

    # Each lie named by exactly its finding, by both auditors (the rounds that built past failed
    # versions are recovery, not forks: only the fork mode is a forked_lineage).
    assert caught == {mode: [EXPECTED[mode]] * len(AUDITORS) for mode in MODES}


def test_a_watcher_killed_at_every_step_attests_each_version_exactly_once(federation, anvil_devnet, tmp_path) -> None:
    admin, nodes, store = federation(quorum=0)
    aggregator = Aggregator(admin, store, DIGITS_MLP.bundled_data().test, CONFIG)
    aggregator.ensure_genesis()
    for _ in STEPS:
        _submit_round(aggregator, nodes, store)
    auditor = dev_account(AUDITORS[0]).address
    args = _watch_args(anvil_devnet.rpc_url, admin.address, AUDITORS[0], tmp_path / "blobs", tmp_path / "auditor")

    for version, step in enumerate(STEPS, start=1):  # crash at step `step` while judging version `version`
        crashed = subprocess.run([sys.executable, str(KILLABLE), step, str(version), *args], capture_output=True, timeout=120)
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    finished = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "audit", "watch", "--once", *args], capture_output=True, text=True, timeout=120
    )

    assert finished.returncode == 0, finished.stderr
    verdicts = admin.events(event_type=events.VersionAttested)
    versions = admin.events(event_type=events.ModelCommitted)
    assert sorted(v.model_hash for v in verdicts) == sorted(v.model_hash for v in versions)  # each exactly once
    assert all(v.ok and v.auditor == auditor for v in verdicts)
    assert admin.w3.eth.get_transaction_count(auditor) == len(versions)  # no second, reverted attempt
    for verdict in verdicts:
        assert _report(tmp_path / "auditor", verdict.report_hash)["verdict"]["verified"] is True


def test_the_governance_commands_deploy_grant_watch_and_resolve(anvil_devnet, tmp_path, capsys) -> None:
    from ledger.chain.deploy import load_deployment
    from ledger.cli.main import main

    chain = ["--rpc-url", anvil_devnet.rpc_url]
    assert main(["deploy", *chain, "--dev-key", "0", "--attestation-quorum", "1"]) == 0
    w3 = connect(anvil_devnet.rpc_url)
    record = load_deployment(w3)
    admin = LedgerClient(w3, record.address, dev_account(0))
    assert admin.attestation_quorum() == 1
    honest, failing = dev_account(AUDITORS[0]).address, dev_account(AUDITORS[1]).address
    for auditor in (honest, failing):
        assert main(["audit", "grant", auditor, *chain, "--dev-key", "0"]) == 0
    store = LocalBlobStore(tmp_path / "blobs", max_bytes=MAX_BYTES)
    genesis = Aggregator(admin, store, DIGITS_MLP.bundled_data().test, CONFIG).ensure_genesis()

    watch = ["audit", "watch", "--once", *chain, "--dev-key", str(AUDITORS[0]), "--blobs-dir", str(tmp_path / "blobs")]
    assert main([*watch, "--auditor-dir", str(tmp_path / "auditor")]) == 0
    assert "version 0 (" in capsys.readouterr().out
    admin.as_account(dev_account(AUDITORS[1])).attest_version(genesis, False, "ab" * 32)  # a dissent
    assert not admin.attestation_counts(genesis).opens_rounds(1)

    resolve = ["audit", "resolve", genesis, failing, "--reason", "the dissent was a misconfigured store"]
    assert main([*resolve, *chain, "--dev-key", "0", "--blobs-dir", str(tmp_path / "blobs")]) == 0

    assert admin.attestation_of(genesis, failing).resolved
    assert admin.attestation_counts(genesis).opens_rounds(1)  # one ok, the failure resolved
    assert main(["audit", "grant", failing, "--remove", *chain, "--dev-key", "0"]) == 0
    assert not admin.is_auditor(failing)
    assert main([*watch, "--dev-key", "1"]) == 1  # not an auditor: a clear error, exit 1
    assert "is not an auditor" in capsys.readouterr().err
