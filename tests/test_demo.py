"""The demo as a user runs it: separate OS processes on a real anvil, and the in-process default.

(Every demo line README.md shows also runs, in memory, in test_readme.py.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ledger.core.polling import free_port
from ledger.chain import events
from ledger.chain.connect import connect
from ledger.chain.client import LedgerClient
from ledger.core.reasons import RejectReason


@pytest.mark.devnet
def test_demo_on_anvil_with_separate_processes_rejects_a_tampering_node_and_auditors_catch_a_lying_aggregator(tmp_path):
    """With int8 updates: each node process reads the encoding genesis pins and follows it."""
    var = tmp_path / "var"
    port, api_port = free_port(), free_port()
    env = dict(os.environ, FEDLEDGER_HOME=str(var))
    command = [sys.executable, "-m", "ledger.cli", "demo", "--nodes", "3", "--rounds", "2", "--tamper", "1"]
    command += ["--epochs", "1", "--port", str(port), "--api-port", str(api_port), "--encoding", "int8"]
    command += ["--auditors", "1", "--lying-aggregator", "root"]  # two auditor processes: test_audit_watch
    try:
        completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stdout + completed.stderr
        out, progress = completed.stdout, completed.stderr
        # Said once, by the aggregator that pinned it at genesis; the node processes read it from there.
        assert progress.count("encoding int8, no DP") == 1 and "aggregator: " in progress
        assert out.count("rejected (hash_mismatch") == 2
        assert "lineage (genesis → latest):" in out and "v2 " in out
        assert "indexed; " in progress  # the SQL index caught up with the chain before the demo ended
        assert "node 1 ready after" in progress  # children's progress is relayed as they start
        address = re.search(r"deployed FederatedLedger at (0x[0-9a-fA-F]{40})", progress).group(1)
        reader = LedgerClient(connect(f"http://127.0.0.1:{port}"), address)
        assert reader.counters().version_count == 3
        rejected = reader.events(event_type=events.UpdateRejected)
        assert {(e.round, e.reason_code) for e in rejected} == {(1, RejectReason.HASH_MISMATCH), (2, RejectReason.HASH_MISMATCH)}
        submitted = reader.events(event_type=events.UpdateSubmitted)
        assert len(submitted) == 6 and len({e.node for e in submitted}) == 3
        # The auditor process attested every version: genesis ok, both lying versions failed (the
        # stranger in the root is the base itself, so it is a no_change too: included_invalid).
        verdicts = re.findall(r"^  v(\d) .* auditor \S+  (ok|FAILED \(.*\))$", out, re.MULTILINE)
        lie = "FAILED (not_submitted, included_invalid)"
        assert sorted(verdicts) == [("0", "ok"), ("1", lie), ("2", lie)], out
        assert reader.attestation_quorum() == 1
    finally:
        subprocess.run([sys.executable, "-m", "ledger.cli", "devnet", "stop", "--port", str(port)], env=env, timeout=60)


def test_default_demo_in_memory_reaches_090_accuracy_with_a_sign_flipping_node(tmp_path, monkeypatch, capsys):
    from ledger.cli.main import main

    monkeypatch.setenv("FEDLEDGER_HOME", str(tmp_path / "var"))
    # Node 4 submits its honest change reversed and scaled to 99, just under the norm bound: every
    # check passes, and the robust default rule (not FedAvg, which falls to 0.10) outlasts it.
    assert main(["demo", "--chain", "memory", "--poison", "4", "--attack", "sign_flip"]) == 0
    out = capsys.readouterr().out
    accuracies = [float(x) for x in re.findall(r"test accuracy (\d\.\d+)", out)]
    assert len(accuracies) == 5
    assert accuracies[-1] >= 0.90
