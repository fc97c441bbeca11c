"""A live round on anvil while 500 idle and 100 slow clients hold connections to the ledger service.

The service runs under its real server (uvicorn + a2wsgi + the guard, default limits) in this
process; the flood is `fedledger bench load`'s attacker, a separate process (idle sockets, header
drips, unsigned and signed slow bodies from 60 loopback addresses, reopened when cut). Timing is
the benchmark's business; this test asserts the service keeps serving: the round commits with
every node's update, and every request a normal client makes during the flood is answered.
"""

from __future__ import annotations

from pathlib import Path

from aggregator.coordinator import Aggregator, AggregatorConfig
from ledger.api.app import create_app
from ledger.api.server import ServerOptions, serve_in_thread
from ledger.chain.client import LedgerClient
from ledger.chain.connect import connect
from ledger.chain.devkeys import dev_account
from ledger.chain.devnet import throwaway_devnet
from ledger.cli.bench.load import NODES, GetProbe, run_live_round, start_flood, stop_flood
from ledger.core.data import load_digits_split
from ledger.core.polling import poll_until
from ledger.store.http import HttpBlobStore
from ledger.store.local import LocalBlobStore

LIMIT = 16 * 1024 * 1024


def test_a_round_commits_while_500_idle_and_100_slow_clients_hold_on(tmp_path: Path) -> None:
    with throwaway_devnet() as devnet:
        admin, _ = LedgerClient.deploy(connect(devnet.rpc_url), dev_account(0))
        for index in range(NODES):
            admin.register_node(dev_account(index + 1).address)
        admin.set_aggregator(dev_account(NODES + 1).address, True)  # the flood's signed slow bodies
        reader = LedgerClient(connect(devnet.rpc_url), admin.address)
        app = create_app(store=LocalBlobStore(tmp_path / "blobs", LIMIT), ledger=reader, max_blob_bytes=LIMIT)
        with serve_in_thread(app, options=ServerOptions()) as server:
            split = load_digits_split(seed=0)
            store = HttpBlobStore.from_ledger(server.url, admin, account=dev_account(0), max_bytes=LIMIT)
            aggregator = Aggregator(admin, store, split.test, AggregatorConfig(min_updates=NODES, round_seconds=120))
            genesis = aggregator.ensure_genesis()
            flood, held = start_flood(server.port, idle=500, slow=100, flooder_key=NODES + 1, ledger=admin)
            try:
                poll_until(lambda: server.guard.open >= 550, timeout=20, what="the flood to hold its connections")
                probe = GetProbe(f"{server.url}/blobs/{genesis}").start()
                result, outcomes = run_live_round(aggregator, devnet.rpc_url, server.url, split, epochs=1)
                probe.stop()
            finally:
                flood_stats = stop_flood(flood)
            guard = server.guard.stats()

    assert held == 600
    assert outcomes == ["submitted"] * NODES
    assert result.committed and len(result.included) == NODES and result.rejected == ()
    assert probe.failures == [] and len(probe.latencies_ms) > 0
    assert flood_stats["held_mean"] >= 480  # the flood really was there throughout (cut and reopened in waves)
    assert guard["unread_bodies"] > 0  # unsigned slow bodies were answered from their headers alone
