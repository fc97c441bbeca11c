"""The processes of `fedledger bench scale`: the real aggregator, and drivers that play many nodes each.

Each runs in its own OS process (multiprocessing spawn) and reports through a queue. A driver
plays its share of the N nodes as a node does on its own machine: it notices the round on chain,
fetches the base model (re-hashed), makes each node's update (the base plus a small per-node
change: a real blob of the task's size; every `reject_every`-th node sends NaNs instead), uploads
it through the signed HTTP store with that node's key and submits `submitUpdate` with that key.
Training is left out: it is the node's own time, not the ledger's. Times are `time.monotonic`,
which is system-wide, so reports from different processes compare.
"""

from __future__ import annotations

import hashlib
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

UPDATE_SCALE = 0.01  # standard deviation of a node's change: an L2 norm of ~0.7 for the digits MLP, under any bound


def node_account(index: int) -> LocalAccount:
    """Bench node `index`'s key: derived from a public label, so worthless anywhere but a throwaway devnet."""
    return Account.from_key(hashlib.sha256(f"fedledger bench scale node {index}".encode()).digest())


def is_bad_node(index: int, reject_every: int) -> bool:
    return reject_every > 0 and index % reject_every == reject_every - 1


def num_samples_of(index: int) -> int:
    return 100 + index % 37


@dataclass(frozen=True)
class Submitted:
    """One node's upload and submission."""

    driver: int
    node: int
    round: int
    started: float  # monotonic: the node began building its update
    uploaded: float  # its signed upload was stored
    landed: float  # its submitUpdate receipt came back
    gas_used: int


@dataclass(frozen=True)
class AggregatorRound:
    round: int
    opened_at: float  # monotonic: before `open_round`
    open_returned_at: float
    finalized_at: float  # the finalize receipt came back
    committed: bool
    included: int
    rejected: int
    timings: dict[str, float]
    rss_before_mib: float | None
    rss_peak_mib: float | None  # VmHWM during the round (reset when it opened)


@dataclass(frozen=True)
class RoleFailed:
    role: str
    error: str


# ---------------------------------------------------------------------------------- aggregator


def aggregator_process(rpc_url: str, address: str, store_url: str, round_seconds: int, rule: str, commands: Any, reports: Any) -> None:
    """The real `Aggregator` (dev key 0: admin and aggregator): genesis, then one round per command."""
    try:
        from aggregator.coordinator import Aggregator, AggregatorConfig
        from ledger.chain.client import LedgerClient
        from ledger.chain.connect import connect
        from ledger.chain.devkeys import dev_account
        from ledger.cli.bench.common import reset_peak_rss, status_kib
        from ledger.config import Settings
        from ledger.tasks.digits import DIGITS_MLP
        from ledger.store.http import HttpBlobStore

        settings = Settings()
        account = dev_account(0)
        client = LedgerClient(connect(rpc_url), address, account)
        store = HttpBlobStore.from_ledger(store_url, client, account=account, max_bytes=settings.max_blob_bytes)
        config = AggregatorConfig(rule=rule, min_updates=1, round_seconds=round_seconds)
        aggregator = Aggregator(client, store, DIGITS_MLP.bundled_data().test, config)
        aggregator.ensure_genesis()
        reports.put(("ready", "aggregator"))
        while commands.get() == "round":
            rss_before = status_kib("VmRSS")
            tracked = reset_peak_rss()
            opened_at = time.monotonic()
            info = aggregator.open_round()
            open_returned_at = time.monotonic()
            result = aggregator.close_round(info.round)
            finalized_at = time.monotonic()
            peak = status_kib("VmHWM") if tracked else None
            reports.put(
                AggregatorRound(
                    round=info.round,
                    opened_at=opened_at,
                    open_returned_at=open_returned_at,
                    finalized_at=finalized_at,
                    committed=result.committed,
                    included=len(result.included),
                    rejected=len(result.rejected),
                    timings=dict(result.timings),
                    rss_before_mib=None if rss_before is None else rss_before / 1024,
                    rss_peak_mib=None if peak is None else peak / 1024,
                )
            )
    except BaseException:
        reports.put(RoleFailed("aggregator", traceback.format_exc()))
        raise


# ---------------------------------------------------------------------------------- drivers


def driver_process(
    driver: int,
    nodes: Sequence[int],
    rpc_url: str,
    address: str,
    store_url: str,
    threads: int,
    reject_every: int,
    reports: Any,
    stop: Any,
) -> None:
    """Plays `nodes` (bench node indices) in every round the chain opens, `threads` nodes at a time."""
    try:
        import torch

        torch.set_num_threads(1)  # many drivers share the cores with anvil, the service and the aggregator

        from ledger.chain.client import LedgerClient, RoundState
        from ledger.chain.connect import connect
        from ledger.config import Settings
        from ledger.core.polling import POLL_SECONDS
        from ledger.core.serialization import deserialize_tensors
        from ledger.store.http import HttpBlobStore

        max_bytes = Settings().max_blob_bytes
        reader = LedgerClient(connect(rpc_url), address)
        base_store = HttpBlobStore.from_ledger(store_url, reader, account=None, max_bytes=max_bytes)
        accounts = {index: node_account(index) for index in nodes}
        local = threading.local()

        def submit(index: int, round_number: int, base: dict[str, torch.Tensor]) -> Submitted:
            if not hasattr(local, "client"):
                local.client = LedgerClient(connect(rpc_url), address)
            started = time.monotonic()
            account = accounts[index]
            blob = update_blob(base, index, round_number, bad=is_bad_node(index, reject_every))
            with HttpBlobStore.from_ledger(store_url, reader, account=account, max_bytes=max_bytes) as store:
                update_hash = store.put(blob)
            uploaded = time.monotonic()
            receipt = local.client.as_account(account).submit_update(round_number, update_hash, num_samples_of(index))
            return Submitted(driver, index, round_number, started, uploaded, time.monotonic(), receipt.gas_used)

        reports.put(("ready", f"driver {driver}"))
        handled: set[int] = set()
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"driver-{driver}") as pool:
            while not stop.is_set():
                round_number = reader.counters().last_round
                if not round_number or round_number in handled:
                    stop.wait(POLL_SECONDS)  # wakes at once when the bench stops the drivers
                    continue
                handled.add(round_number)
                info = reader.get_round(round_number)
                if info.state is not RoundState.OPEN or info.base_model_hash is None:
                    continue
                base = deserialize_tensors(base_store.get(info.base_model_hash), max_bytes=max_bytes)
                for submitted in pool.map(lambda index: submit(index, round_number, base), nodes):
                    reports.put(submitted)
    except BaseException:
        reports.put(RoleFailed(f"driver {driver}", traceback.format_exc()))
        raise


def update_blob(base: dict[str, Any], node: int, round_number: int, *, bad: bool) -> bytes:
    """Node `node`'s update for `round_number`: canonical bytes of base + a seeded change (NaN if `bad`)."""
    import torch

    from ledger.core.serialization import serialize_tensors

    generator = torch.Generator().manual_seed(node * 1_000_003 + round_number)
    update = {}
    for name in sorted(base):
        tensor = base[name]
        change = torch.randn(tensor.shape, generator=generator, dtype=torch.float32) * UPDATE_SCALE
        update[name] = torch.full_like(tensor, float("nan")) if bad else tensor + change
    return serialize_tensors(update)
