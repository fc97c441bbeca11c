"""`fedledger demo`: a real federation — aggregator and N edge nodes — on a devnet or in one process.

With `--chain anvil` (default) it starts the devnet if none runs, deploys a fresh ledger, serves
the blob store over HTTP, and runs the aggregator and every node as separate OS processes
(`fedledger aggregator run`, `fedledger node run`). With `--chain memory` everything runs in this
process on the in-process chain. Either way it federates `--task` (default digits-mlp) on shares of
the task's bundled data and prints a table per round and the lineage at the end.

This module and the CLI are the composition root: they import `aggregator` and `edge_node`, which
never import each other.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.config import home_dir

if TYPE_CHECKING:
    from ledger.core.task import Task

NODE_EXIT_TIMEOUT = 60.0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from ledger.cli.policy_options import add_policy_arguments
    from ledger.cli.wiring import add_share_arguments, add_task_arguments

    demo = subparsers.add_parser("demo", help="run a federated training demo end to end")
    add_task_arguments(demo)
    demo.add_argument("--nodes", type=int, default=5)
    demo.add_argument("--rounds", type=int, default=5)
    demo.add_argument("--chain", choices=["anvil", "memory"], default="anvil")
    add_share_arguments(demo)
    demo.add_argument("--tamper", type=int, action="append", default=[], metavar="K", help="node K alters its stored blob before its hash goes on chain")
    demo.add_argument("--poison", type=int, action="append", default=[], metavar="K", help="node K submits NaN / scaled weights")
    demo.add_argument("--rule", default="fedavg")
    demo.add_argument("--min-updates", type=int, default=None, help="default: a majority of the nodes")
    demo.add_argument("--round-seconds", type=int, default=60)
    demo.add_argument("--port", type=int, default=None, help="devnet port (default 8545)")
    demo.add_argument("--api-port", type=int, default=8600)
    demo.add_argument("--serve", action="store_true", help="afterwards keep serving the audit page and API until Ctrl-C")
    add_policy_arguments(demo)
    demo.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ledger.cli.errors import CommandError
    from ledger.cli.policy_options import privacy_policy
    from ledger.cli.wiring import resolve_task

    args.privacy = privacy_policy(args)  # refuse incomplete DP options before anything starts
    bad = sorted(set(args.tamper) | set(args.poison))
    if any(not 0 <= k < args.nodes for k in bad):
        raise CommandError(f"--tamper/--poison take node indexes 0..{args.nodes - 1}")
    if args.nodes < 1 or args.rounds < 1:
        raise CommandError("--nodes and --rounds must be at least 1")
    if args.min_updates is None:
        args.min_updates = args.nodes // 2 + 1
    task, overrides = resolve_task(args)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans up the children like Ctrl-C
    try:
        return _run_memory(args, task, overrides) if args.chain == "memory" else _run_anvil(args, overrides)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# ------------------------------------------------------------------ memory


def _run_memory(args: argparse.Namespace, task: Task, overrides: dict[str, Any]) -> int:
    from ledger.cli.federation import start_federation
    from ledger.cli.report import print_round
    from edge_node.misbehaviour import poison_transform, tamper_at_rest
    from edge_node.node import Outcome
    from ledger.config import Settings
    from ledger.store.local import LocalBlobStore

    settings = Settings()
    blobs_dir = home_dir() / "memory" / "blobs"
    store = LocalBlobStore(blobs_dir, max_bytes=settings.max_blob_bytes)
    print(f"in-process chain: deploying the ledger and registering {args.nodes} nodes; task {task.name}", flush=True)
    hooks = {k: {"transform": poison_transform()} for k in args.poison}
    hooks.update({k: {"after_upload": tamper_at_rest(blobs_dir)} for k in args.tamper})
    federation = start_federation(
        task,
        store,
        nodes=args.nodes,
        max_model_bytes=settings.max_blob_bytes,
        hyperparameters=overrides,
        iid=args.iid,
        alpha=args.alpha,
        node_hooks=hooks,
        rule=args.rule,
        min_updates=args.min_updates,
        round_seconds=args.round_seconds,
        encoding=args.encoding,
        privacy=args.privacy,
    )
    for _ in range(args.rounds):
        print_round(federation.run_round())
        if set(federation.outcomes) == {Outcome.BUDGET_EXHAUSTED}:
            print(f"every node has spent its ε budget ({args.privacy.epsilon_budget}): stopping", flush=True)
            break
    print(lineage_text(federation.chain.admin, store))
    if args.serve:
        _serve_memory(args, federation.chain, store)
    return 0


def _serve_memory(args: argparse.Namespace, chain: Any, store: Any) -> None:
    """Index the in-process chain into SQLite and serve the audit page from this process."""
    import threading

    from ledger.api.app import create_app
    from ledger.api.server import serve_in_thread
    from ledger.chain.client import LedgerClient
    from ledger.index.db import make_engine, session_factory, upgrade
    from ledger.index.indexer import Indexer

    database = home_dir() / "memory" / f"index-{int(time.time())}.sqlite"
    engine = make_engine(f"sqlite:///{database}")
    upgrade(engine)
    sessions = session_factory(engine)
    Indexer(chain.w3, chain.address, sessions, store=store).run_once()
    reader = LedgerClient(chain.w3, chain.address)
    app = create_app(store=store, ledger=reader, max_blob_bytes=512 << 20, index_sessions=sessions)
    with serve_in_thread(app, "127.0.0.1", args.api_port):
        print(f"audit page: http://127.0.0.1:{args.api_port}/  (API under /api/v1; Ctrl-C to stop)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


# ------------------------------------------------------------------ anvil


def _run_anvil(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from ledger.core.polling import wait_for_port
    from ledger.chain.connect import connect
    from ledger.chain.deploy import deploy
    from ledger.chain.devkeys import DEV_ACCOUNT_COUNT, dev_account
    from ledger.chain.devnet import Devnet
    from ledger.store.http import HttpBlobStore
    from ledger.cli.errors import CommandError
    from ledger.cli.policy_options import policy_argv

    if args.nodes > DEV_ACCOUNT_COUNT - 1:
        raise CommandError(f"the devnet funds {DEV_ACCOUNT_COUNT} dev accounts: at most {DEV_ACCOUNT_COUNT - 1} nodes")
    devnet = Devnet(port=args.port) if args.port else Devnet()
    status = devnet.start()
    print(f"devnet: {devnet.rpc_url}, chain id {status.chain_id}, block {status.block_number}", flush=True)
    w3 = connect(devnet.rpc_url)
    admin, record, _ = deploy(w3, dev_account(0))
    print(f"deployed FederatedLedger at {record.address} (block {record.block_number})", flush=True)
    for index in range(args.nodes):
        admin.register_node(dev_account(index + 1).address)
    print(f"registered {args.nodes} nodes (dev accounts 1..{args.nodes})", flush=True)

    run_dir = home_dir() / "demo" / record.address.lower()
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    blobs_dir = home_dir() / "blobs"
    database_url = f"sqlite:///{run_dir / 'index.sqlite'}"
    _migrate(database_url)
    fedledger = [sys.executable, "-m", "ledger.cli"]
    chain_args = ["--rpc-url", devnet.rpc_url, "--contract", record.address]
    task_args = ["--task", args.task]
    for name, value in overrides.items():
        task_args += ["--hyper", f"{name}={json.dumps(value)}"]
    store_url = f"http://127.0.0.1:{args.api_port}"
    children: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        children.append(
            _spawn(
                fedledger
                + ["api", "serve", "--port", str(args.api_port), "--blobs-dir", str(blobs_dir)]
                + ["--database-url", database_url, *chain_args],
                logs / "api.log",
                env,
            )
        )
        children.append(
            _spawn(
                fedledger
                + ["index", "run", "--follow", "--poll-seconds", "0.2", *chain_args, "--blobs-dir", str(blobs_dir)]
                + ["--database-url", database_url, "--from-block", str(record.block_number)],
                logs / "index.log",
                env,
            )
        )
        wait_for_port("127.0.0.1", args.api_port, timeout=60)
        print(f"ledger service (blob store) at {store_url}; logs in {logs}", flush=True)
        for index in range(args.nodes):
            command = fedledger + ["node", "run", *chain_args, *task_args, "--dev-key", str(index + 1), "--store", store_url]
            command += ["--node-index", str(index), "--num-nodes", str(args.nodes), "--rounds", str(args.rounds)]
            if not args.iid:
                command += ["--non-iid", "--alpha", str(args.alpha)]
            if index in args.tamper:
                command += ["--misbehave", "tamper", "--tamper-dir", str(blobs_dir)]
            elif index in args.poison:
                command += ["--misbehave", "poison"]
            children.append(_spawn(command, logs / f"node-{index}.log", env))
        aggregator_command = fedledger + ["aggregator", "run", *chain_args, *task_args, "--dev-key", "0", "--store", store_url]
        aggregator_command += ["--rounds", str(args.rounds), "--rule", args.rule, "--min-updates", str(args.min_updates)]
        aggregator_command += ["--round-seconds", str(args.round_seconds), *policy_argv(args)]
        aggregator = subprocess.Popen(aggregator_command, env=env)
        children.append(aggregator)
        _watch(aggregator, children[2:-1], logs)
        if aggregator.returncode != 0:
            raise CommandError(f"the aggregator failed (exit {aggregator.returncode}); node logs in {logs}")
        for child in children[2:-1]:
            try:
                child.wait(timeout=NODE_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.terminate()
        store = HttpBlobStore.from_ledger(store_url, admin, account=None, max_bytes=512 << 20)
        print(lineage_text(admin, store), flush=True)
        _wait_indexed(store_url, int(w3.eth.block_number))
        if args.serve:
            print(f"audit page: {store_url}/  (API under {store_url}/api/v1; Ctrl-C to stop)", flush=True)
            try:
                children[0].wait()
            except KeyboardInterrupt:
                pass
        else:
            print(f"indexed; `fedledger demo --serve` keeps the audit page up at {store_url}/", flush=True)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def _migrate(database_url: str) -> None:
    from ledger.index.db import make_engine, upgrade

    engine = make_engine(database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def _wait_indexed(service_url: str, head: int, timeout: float = 60.0) -> None:
    """Poll the API until the indexer child has mirrored every block up to `head`."""
    import requests

    from ledger.core.polling import poll_until

    def caught_up() -> bool:
        try:
            summary = requests.get(f"{service_url}/api/v1/summary", timeout=5).json()
        except (requests.RequestException, ValueError):
            return False
        return (summary.get("indexed_block") or 0) >= head

    poll_until(caught_up, timeout=timeout, interval=0.2, what="the indexer to catch up")


def _watch(aggregator: subprocess.Popen[bytes], nodes: list[subprocess.Popen[bytes]], logs: Path) -> None:
    """Wait for the aggregator, saying at once when a node process dies instead of going silent."""
    reported: set[int] = set()
    while aggregator.poll() is None:
        for index, node in enumerate(nodes):
            if index not in reported and node.poll() not in (None, 0):
                reported.add(index)
                print(f"node {index} exited with code {node.returncode}: see {logs / f'node-{index}.log'}", flush=True)
        time.sleep(0.2)


def _spawn(command: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    finally:
        log.close()


# ------------------------------------------------------------------ lineage


def lineage_text(client: Any, store: Any) -> str:
    """The lineage of the latest version, with accuracy read from each version's metadata blob."""
    from ledger.cli.report import LineageRow, format_lineage
    from ledger.chain.rounds import committed_models, lineage

    versions = committed_models(client)
    rows = []
    for step in lineage(client, versions[-1].model_hash):
        accuracy = None
        if step.metadata_hash is not None:
            try:
                accuracy = json.loads(store.get(step.metadata_hash)).get("metrics", {}).get("test_accuracy")
            except Exception:  # a missing blob costs the accuracy column, not the lineage
                accuracy = None
        rows.append(LineageRow(step.version, step.round, step.model_hash, step.included_count, accuracy))
    return format_lineage(rows)
