"""Users get the in-process chain fixtures in their own suites just by installing fedledger."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_plugin_fixtures_work_in_a_foreign_test_suite(tmp_path):
    (tmp_path / "test_users_own.py").write_text(
        textwrap.dedent(
            """
            import hashlib
            import pytest
            from ledger.chain import errors

            def test_users_round(ledger_chain, ledger_admin, ledger_nodes):
                assert len(ledger_nodes) == 5
                g = hashlib.sha256(b"g").hexdigest()
                ledger_admin.commit_genesis(g, g)
                ledger_admin.open_round(1, g, ledger_chain.now() + 60, 1)
                ledger_nodes[0].submit_update(1, hashlib.sha256(b"u").hexdigest(), 10)
                with pytest.raises(errors.AlreadySubmitted):
                    ledger_nodes[0].submit_update(1, hashlib.sha256(b"u").hexdigest(), 10)
                ledger_chain.advance_time(61)
                with pytest.raises(errors.DeadlinePassed):
                    ledger_nodes[1].submit_update(1, hashlib.sha256(b"v").hexdigest(), 10)
            """
        )
    )
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "1 passed" in completed.stdout
