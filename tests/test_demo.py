"""The demo as a user runs it: the in-process default reaches its accuracy target.

The demo on anvil with separate OS processes (a tampering and a poisoning node caught on chain,
progress relayed, the index caught up) runs as one of README.md's commands in test_readme.py.
"""

from __future__ import annotations

import re


def test_default_demo_in_memory_reaches_090_accuracy(tmp_path, monkeypatch, capsys):
    from ledger.cli.main import main

    monkeypatch.setenv("FEDLEDGER_HOME", str(tmp_path / "var"))
    assert main(["demo", "--chain", "memory"]) == 0
    out = capsys.readouterr().out
    accuracies = [float(x) for x in re.findall(r"test accuracy (\d\.\d+)", out)]
    assert len(accuracies) == 5
    assert accuracies[-1] >= 0.90
