"""The fault matrix: a live federation of real processes on a real anvil, killed with SIGKILL at each step.

One federation runs three rounds: three `fedledger node run` processes (one honest, one tampering,
one poisoning, so every round records two rejections), `fedledger aggregator run` processes
started again after each kill, two `fedledger index run --follow` processes, and the blob store
(real uvicorn + a2wsgi) in this process. To kill a process *between* two of its steps, anvil's automine is
switched off and this test mines the pending transactions itself: it sees a transaction in the
pool (the process is waiting for its receipt) and kills the process right there, then mines the
transaction (it was sent) or drops it (the process died before sending it).

| fault | expected outcome |
|---|---|
| aggregator killed right after opening round 1 | restart picks round 1 up and commits it |
| aggregator killed mid-rejections (1 of 2 on chain) | restart sends only the missing one |
| aggregator killed after sending finalizeRound, before its receipt | restart finds round 1 committed, goes on |
| edge node killed after its upload, before its submission lands | restart submits the same update |
| aggregator killed after storing round 2's model, before finalizing | restart commits round 2 once |
| anvil killed mid-round 3 (opened, the submissions still in the pool), restarted by `fedledger devnet start` 5 s later | nobody restarted by hand: the nodes send their submissions again, round 3 commits, the index catches up |
| an indexer with `--patience 2` during that outage | exits with code 3 and one line |
| `audit verify` with the store down | "could not check", exit 3 |

Afterwards every round is committed exactly once, every rejection recorded exactly once, and the
model hashes equal those of an uninterrupted run of the same federation (computed in-process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eth_utils import function_abi_to_4byte_selector

from ledger.chain import events
from ledger.chain.artifact import load_artifact
from ledger.chain.client import LedgerClient, RoundState
from ledger.chain.connect import connect
from ledger.chain.devkeys import dev_account
from ledger.chain.devnet import Devnet, rpc_call
from ledger.core.polling import free_port, poll_until
from ledger.core.reasons import RejectReason

pytestmark = pytest.mark.devnet

NODES = 3
TAMPER, POISON = 1, 2
ROUNDS = 3
PROCESS_TIMEOUT = 240.0
OUTAGE_SECONDS = 5.0  # a process start (torch import) on a busy 2-core machine


@dataclass
class Federation:
    tmp: Path
    devnet: Devnet
    admin: LedgerClient
    deploy_block: int
    store_url: str
    blobs_dir: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)
    selectors: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------ processes

    def spawn(self, name: str, *arguments: str) -> subprocess.Popen[bytes]:
        self.starts[name] = self.starts.get(name, 0) + 1
        log = self.log_path(name)
        with log.open("wb") as handle:
            process = subprocess.Popen(
                [sys.executable, "-m", "ledger.cli", "--log-format", "json", *arguments],
                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
            )  # fmt: skip
        self.processes[name] = process
        return process

    def log_path(self, name: str) -> Path:
        return self.tmp / f"{name}-{self.starts.get(name, 1)}.log"

    def chain_args(self) -> list[str]:
        return ["--rpc-url", self.devnet.rpc_url, "--contract", self.admin.address]

    def start_node(self, index: int) -> None:
        arguments = ["node", "run", *self.chain_args(), "--dev-key", str(index + 1), "--store", self.store_url]
        arguments += ["--node-index", str(index), "--num-nodes", str(NODES), "--rounds", str(ROUNDS)]
        arguments += ["--epochs", "1", "--threads", "1"]
        if index == TAMPER:
            arguments += ["--misbehave", "tamper", "--tamper-dir", str(self.blobs_dir)]
        elif index == POISON:
            arguments += ["--misbehave", "poison"]
        self.spawn(f"node-{index}", *arguments)

    def start_aggregator(self) -> None:
        arguments = ["aggregator", "run", *self.chain_args(), "--dev-key", "0", "--store", self.store_url]
        arguments += ["--rounds", str(ROUNDS), "--min-updates", "1", "--round-seconds", "600", "--epochs", "1"]
        self.spawn("aggregator", *arguments)

    def kill(self, name: str) -> None:
        """SIGKILL by PID, as a crash would: no cleanup, no atexit."""
        process = self.processes[name]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def records(self, name: str) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path(name).read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def alive(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}:\n{self.log_path(name).read_text()[-3000:]}")

    # ------------------------------------------------------------ the chain

    def rpc(self, method: str, *params: Any) -> Any:
        return rpc_call(self.devnet.rpc_url, method, list(params), timeout=10)

    def pending(self) -> list[tuple[str, str, str]]:
        """(sender, contract function, tx hash) of every transaction waiting in the pool."""
        found = []
        for sender, by_nonce in self.rpc("txpool_content")["pending"].items():
            for tx in by_nonce.values():
                found.append((Web3Address(sender), self.selectors.get(tx["input"][:10], "?"), tx["hash"]))
        return found

    def pending_by_function(self, function: str) -> list[str]:
        """The hashes of every pending call of `function`, whoever sent it."""
        return [tx_hash for _, name, tx_hash in self.pending() if name == function]

    def pending_by_nonce(self, sender: str, function: str) -> list[str]:
        """The hashes of `sender`'s pending calls of `function`, in nonce order."""
        by_nonce = {
            int(nonce): tx
            for address, txs in self.rpc("txpool_content")["pending"].items()
            if Web3Address(address) == sender
            for nonce, tx in txs.items()
        }
        return [tx["hash"] for _, tx in sorted(by_nonce.items()) if self.selectors.get(tx["input"][:10]) == function]

    def drive(self, until: Callable[[], Any], *, stop_on: Callable[[str, str], bool] = lambda sender, fn: False,
              watch: tuple[str, ...] = (), timeout: float = PROCESS_TIMEOUT) -> str | None:
        """Mine whatever is pending until `until()` holds (None), or return the hash of the first
        pending transaction `stop_on(sender, function)` picks, leaving it unmined."""
        deadline = time.monotonic() + timeout
        while True:
            for name in watch:
                self.alive(name)
            waiting = self.pending()
            for sender, function, tx_hash in waiting:
                if stop_on(sender, function):
                    return tx_hash
            if waiting:
                self.rpc("evm_mine")
            elif until():
                return None
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up driving the chain after {timeout:.0f} s; pool: {waiting}")
            time.sleep(0.02)

    def round_state(self, number: int) -> RoundState:
        return self.admin.get_round(number).state

    def rejections(self, number: int) -> list[tuple[str, int]]:
        topic = "0x" + number.to_bytes(32, "big").hex()
        return [(e.node, e.reason_code) for e in self.admin.events(event_type=events.UpdateRejected, topic_filters=[topic])]

    def submissions(self, number: int) -> list[events.UpdateSubmitted]:
        topic = "0x" + number.to_bytes(32, "big").hex()
        return self.admin.events(event_type=events.UpdateSubmitted, topic_filters=[topic])


def Web3Address(address: str) -> str:
    from web3 import Web3

    return Web3.to_checksum_address(address)


AGGREGATOR = dev_account(0).address


def node_address(index: int) -> str:
    return dev_account(index + 1).address


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> Iterator[Federation]:
    from ledger.api.app import create_app
    from ledger.api.server import serve_in_thread
    from ledger.index.db import make_engine, upgrade
    from ledger.store.local import LocalBlobStore

    tmp = tmp_path_factory.mktemp("faults")
    home = tmp / "var"
    devnet = Devnet(port=free_port(), state_dir=home / "devnet")
    devnet.start()
    server = None
    fed = None
    try:
        w3 = connect(devnet.rpc_url)
        admin, record = _deploy_fresh(w3)  # not recorded: the processes get --contract
        for index in range(NODES):
            admin.register_node(node_address(index))
        blobs_dir = tmp / "blobs"
        reader = LedgerClient(connect(devnet.rpc_url, patience=5), admin.address)
        server = serve_in_thread(create_app(store=LocalBlobStore(blobs_dir, 1 << 26), ledger=reader, max_blob_bytes=1 << 26), threads=4)
        env = dict(os.environ, FEDLEDGER_HOME=str(home), PYTHONUNBUFFERED="1")
        fed = Federation(tmp, devnet, admin, record, server.url, blobs_dir, env)
        fed.selectors = {
            "0x" + function_abi_to_4byte_selector(entry).hex(): entry["name"]
            for entry in load_artifact().abi
            if entry.get("type") == "function"
        }
        for name in ("index", "index-impatient"):
            engine = make_engine(f"sqlite:///{tmp / name}.sqlite")
            upgrade(engine)
            engine.dispose()
        yield fed
    finally:
        if fed is not None:
            for process in fed.processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=30)
        if server is not None:
            server.close()
        devnet.stop()


def _deploy_fresh(w3) -> tuple[LedgerClient, int]:
    admin, result = LedgerClient.deploy(w3, dev_account(0))
    return admin, result.block_number


def test_every_fault_ends_in_rounds_committed_exactly_once_with_the_uninterrupted_hashes(federation: Federation) -> None:
    fed = federation
    phases = _Phases()
    for name, patience in (("index", None), ("index-impatient", "2")):
        arguments = ["index", "run", "--follow", "--poll-seconds", "0.2", *fed.chain_args(), "--store", fed.store_url]
        arguments += ["--database-url", f"sqlite:///{fed.tmp / name}.sqlite", "--from-block", str(fed.deploy_block)]
        fed.spawn(name, *arguments, *(["--patience", patience] if patience else []))
    for index in range(NODES):
        fed.start_node(index)
    fed.start_aggregator()
    fed.rpc("evm_setAutomine", False)

    phases.mark('started')
    # 1. Aggregator killed right after round 1 opened.
    fed.drive(lambda: fed.round_state(1) is RoundState.OPEN, watch=("aggregator",))
    fed.kill("aggregator")
    fed.drive(lambda: len(fed.submissions(1)) == NODES, watch=tuple(f"node-{index}" for index in range(NODES)))

    phases.mark('killed 1')
    # 2. Killed mid-rejections: the first rejection is on chain, the second one never landed. The
    #    aggregator sends its rejections back to back: both wait in the pool; the later is dropped.
    fed.start_aggregator()
    fed.drive(lambda: False, stop_on=lambda sender, fn: sender == AGGREGATOR and fn == "rejectUpdate", watch=("aggregator",))
    poll_until(lambda: len(fed.pending_by_nonce(AGGREGATOR, "rejectUpdate")) == 2, timeout=PROCESS_TIMEOUT, interval=0.02,
               what="both rejections sent")  # fmt: skip
    fed.kill("aggregator")
    first, second = fed.pending_by_nonce(AGGREGATOR, "rejectUpdate")
    fed.rpc("anvil_dropTransaction", second)
    fed.rpc("evm_mine")
    assert len(fed.rejections(1)) == 1 and fed.pending_by_nonce(AGGREGATOR, "rejectUpdate") == []

    phases.mark('killed 2')
    # 3. Killed after sending finalizeRound, before its receipt: the transaction lands without it.
    fed.start_aggregator()
    fed.drive(lambda: False, stop_on=lambda sender, fn: sender == AGGREGATOR and fn == "finalizeRound", watch=("aggregator",))
    fed.kill("aggregator")
    fed.rpc("evm_mine")
    assert fed.round_state(1) is RoundState.FINALIZED
    assert sorted(fed.rejections(1)) == sorted(_expected_rejections(1))

    phases.mark('killed 3')
    # 4. Node 0 killed after its upload, before its submission landed; restarted, it submits again.
    fed.start_aggregator()
    lost = fed.drive(lambda: False, stop_on=lambda sender, fn: sender == node_address(0) and fn == "submitUpdate",
                     watch=("aggregator",))  # fmt: skip
    fed.kill("node-0")
    lost_update = _submitted_hash(fed, lost)
    fed.rpc("anvil_dropTransaction", lost)
    assert (fed.blobs_dir / lost_update[:2] / lost_update).exists()  # uploaded before the kill
    fed.start_node(0)

    phases.mark('node')
    # 5. Aggregator killed after storing round 2's model, before finalizing: the finalize is dropped.
    unsent = fed.drive(lambda: False, stop_on=lambda sender, fn: sender == AGGREGATOR and fn == "finalizeRound",
                       watch=("aggregator", "node-0"))  # fmt: skip
    fed.kill("aggregator")
    fed.rpc("anvil_dropTransaction", unsent)
    assert fed.round_state(2) is RoundState.OPEN
    fed.start_aggregator()
    fed.drive(lambda: False, stop_on=lambda sender, fn: sender == AGGREGATOR and fn == "openRound", watch=("aggregator",))
    assert fed.round_state(2) is RoundState.FINALIZED
    node0 = [s.update_hash for s in fed.submissions(2) if s.node == node_address(0)]
    assert node0 == [lost_update]  # the restarted node re-derived and submitted the same bytes

    phases.mark('killed 5')
    # 6. anvil killed mid-round 3 and restarted 5 s later with `fedledger devnet start`; nobody else restarted.
    #    Round 3 is held open: its opening is mined, the nodes' submissions wait in the pool (lost with
    #    anvil, sent again by the nodes), so the aggregator is waiting on the chain when it goes away.
    fed.rpc("evm_mine")
    assert fed.round_state(3) is RoundState.OPEN
    poll_until(lambda: len(fed.pending_by_function("submitUpdate")) == NODES, timeout=PROCESS_TIMEOUT, interval=0.05,
               what="every node's round-3 submission in the pool")  # fmt: skip
    assert fed.round_state(3) is RoundState.OPEN and fed.processes["aggregator"].poll() is None
    fed.devnet.wait_persisted(int(fed.admin.w3.eth.block_number))
    fed.devnet.kill_hard()
    killed_at = time.monotonic()
    impatient = fed.processes["index-impatient"]
    impatient.wait(timeout=60)
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - killed_at)))  # the outage itself is what is tested
    started = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "devnet", "start", "--port", str(fed.devnet.port)],
        env=fed.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    aggregator = fed.processes["aggregator"]
    assert aggregator.wait(timeout=PROCESS_TIMEOUT) == 0, fed.log_path("aggregator").read_text()[-3000:]
    for index in range(NODES):
        assert fed.processes[f"node-{index}"].wait(timeout=PROCESS_TIMEOUT) == 0
    head = int(fed.admin.w3.eth.block_number)
    poll_until(lambda: _indexed_block(fed.tmp / "index.sqlite") >= head, timeout=60, interval=0.2, what="the index")

    phases.mark('outage')
    # The impatient indexer gave up in one line with exit code 3.
    assert impatient.returncode == 3
    errors = [line for line in fed.log_path("index-impatient").read_text().splitlines() if line.startswith("fedledger: error:")]
    assert len(errors) == 1 and "unreachable" in errors[0]
    warnings = [r for r in fed.records("aggregator") if "unreachable" in str(r.get("message"))]
    assert len(warnings) == 1  # the surviving aggregator said so once

    phases.mark('checks')
    # The chain: every round committed once, every rejection once, the uninterrupted run's hashes.
    committed = fed.admin.events(event_type=events.ModelCommitted)
    assert [(e.version, e.round) for e in committed] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert fed.admin.events(event_type=events.RoundAbandoned) == []
    for number in range(1, ROUNDS + 1):
        assert sorted(fed.rejections(number)) == sorted(_expected_rejections(number))
    assert [e.model_hash for e in committed] == _uninterrupted_hashes(fed.tmp / "reference")

    phases.mark('reference')
    # `audit verify` with the store down: no verdict, exit 3.
    from ledger.cli.main import main

    down = f"http://127.0.0.1:{free_port()}"
    code = main(["audit", "verify", "latest", *fed.chain_args(), "--store", down])
    assert code == 3
    phases.mark("end")
    print(phases)  # with -s: where the time went


class _Phases:
    def __init__(self) -> None:
        self.marks = [("start", time.monotonic())]

    def mark(self, name: str) -> None:
        self.marks.append((name, time.monotonic()))

    def __str__(self) -> str:
        steps = zip(self.marks, self.marks[1:])
        return "\n".join(f"{a:>12} -> {b:<12} {tb - ta:6.1f} s" for (a, ta), (b, tb) in steps)


def test_a_dependency_that_never_answers_is_one_line_and_exit_3(federation: Federation, capsys) -> None:
    from ledger.cli.main import main

    dead_chain = f"http://127.0.0.1:{free_port()}"
    assert main(["round", "status", "--rpc-url", dead_chain]) == 3
    assert main(["node", "run", *federation.chain_args(), "--dev-key", "1", "--node-index", "0", "--num-nodes", str(NODES),
                 "--store", f"http://127.0.0.1:{free_port()}"]) == 3  # fmt: skip
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("fedledger: error: ") for line in errors)
    assert "no chain answers" in errors[0] and "blob store" in errors[1]


def _expected_rejections(number: int) -> list[tuple[str, int]]:
    poisoned = RejectReason.NON_FINITE if number % 2 else RejectReason.NORM_TOO_LARGE
    return [(node_address(TAMPER), RejectReason.HASH_MISMATCH), (node_address(POISON), poisoned)]


def _submitted_hash(fed: Federation, tx_hash: str) -> str:
    tx = fed.rpc("eth_getTransactionByHash", tx_hash)
    _, arguments = fed.admin.contract.decode_function_input(tx["input"])
    return bytes(arguments["updateHash"]).hex()


def _indexed_block(database: Path) -> int:
    import sqlite3

    with sqlite3.connect(database) as connection:
        row = connection.execute("SELECT last_block FROM indexer_cursor").fetchone()
    return int(row[0]) if row and row[0] is not None else -1


def _uninterrupted_hashes(blobs: Path) -> list[str]:
    """The same federation (shards, seeds, misbehaviour) run without faults, in this process."""
    import torch

    from aggregator.coordinator import Aggregator, AggregatorConfig
    from edge_node.misbehaviour import poison_transform, tamper_at_rest
    from edge_node.node import EdgeNode, TrainingConfig
    from ledger.chain.inprocess import start_in_process_ledger
    from ledger.tasks.digits import DIGITS_MLP
    from ledger.tasks.partition import split_examples
    from ledger.store.local import LocalBlobStore

    torch.set_num_threads(1)
    chain = start_in_process_ledger(NODES)
    store = LocalBlobStore(blobs, 1 << 26)
    split = DIGITS_MLP.bundled_data()
    shards = split_examples(split.train, NODES, iid=True, alpha=0.5, seed=0)
    nodes = [
        EdgeNode(
            client, store, shard, TrainingConfig(hyperparameters={"epochs": 1}, seed=index), max_model_bytes=1 << 26,
            transform=poison_transform() if index == POISON else None,
            after_upload=tamper_at_rest(blobs) if index == TAMPER else None,
        )  # fmt: skip
        for index, (client, shard) in enumerate(zip(chain.nodes, shards))
    ]
    aggregator = Aggregator(chain.admin, store, split.test, AggregatorConfig(min_updates=1, round_seconds=600, hyperparameters={"epochs": 1}))
    hashes = [aggregator.ensure_genesis()]
    for _ in range(ROUNDS):
        info = aggregator.open_round()
        for node in nodes:
            node.participate(info.round)
        hashes.append(aggregator.close_round(info.round).model_hash)
    return hashes
