"""A live round on anvil while 500 idle and 100 slow clients hold connections to the ledger service.

`fedledger bench load` end to end: anvil, `fedledger api serve` and the indexer as their own
processes, the flood as another (idle sockets, header drips, unsigned and signed slow bodies from
60 loopback addresses, reopened as soon as they are cut). Timing is the benchmark's business;
this test asserts the service keeps serving: the round commits with every node's update, and
every lineage request a normal client makes during the flood is answered.
"""

from __future__ import annotations

import pytest

from ledger.cli.bench.load import NODES, measure_load


@pytest.mark.devnet
def test_a_round_commits_while_500_idle_and_100_slow_clients_hold_on() -> None:
    report = measure_load(idle=500, slow=100, epochs=1, window_seconds=0.5)

    flood, round_, lineage = report["flood"], report["round"], report["lineage"]
    assert flood["held_when_the_round_opened"] == 600
    assert flood["held_mean"] >= 480  # the flood really was there throughout (cut and reopened in waves)
    assert flood["cut_by_server"] > 0  # unsigned slow bodies answered from their headers, drips cut
    assert round_["node_outcomes"] == ["submitted"] * NODES
    assert round_["committed"] and round_["included"] == NODES and round_["rejected"] == 0
    assert lineage["failed"] == 0 and lineage["requests"] > 0
