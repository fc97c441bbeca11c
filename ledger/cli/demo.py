"""`fedledger demo`: a real federation — aggregator and N edge nodes — on a devnet or in one process.

With `--chain anvil` (default) it starts the devnet if none runs, deploys a fresh ledger, serves
the blob store over HTTP, and runs the aggregator, every node and every auditor as separate OS
processes (`fedledger aggregator run`, `fedledger node run`, `fedledger audit watch`). With
`--chain memory` everything runs in this process on the in-process chain. Either way it federates
`--task` (default digits-mlp) on shares of the task's bundled data and prints a table per round, the
lineage at the end, and with `--auditors K` every auditor's verdict on every version (a lying
aggregator's versions attested failed, naming what it did).

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

from ledger.cli.node import ATTACKS
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
    demo.add_argument("--poison", type=int, action="append", default=[], metavar="K", help="node K poisons (see --attack)")
    demo.add_argument(
        "--attack",
        choices=["nan_or_scaled", *ATTACKS],
        default="nan_or_scaled",
        help="what --poison nodes do: NaN / 10^4-scaled weights (default, rejected by the intake) or an attack "
        "that passes every check (sign_flip, label_flip, scaling, slow_poison, inflated_samples, copy_hash, free_rider)",
    )
    demo.add_argument("--rule", default=None, help="aggregation rule (default: the robust arc_nnm_trimmed_mean)")
    demo.add_argument("--min-updates", type=int, default=None, help="default: a majority of the nodes")
    demo.add_argument("--round-seconds", type=int, default=60)
    demo.add_argument("--port", type=int, default=None, help="devnet port (default 8545)")
    demo.add_argument("--api-port", type=int, default=8600)
    demo.add_argument("--serve", action="store_true", help="afterwards keep serving the audit page and API until Ctrl-C")
    demo.add_argument(
        "--auditors",
        type=int,
        default=0,
        metavar="K",
        help="K independent auditors re-derive and attest every version; a round opens only on a version all K attested ok",
    )
    demo.add_argument(
        "--lying-aggregator",
        metavar="MODE",
        help="the aggregator lies this way each round: model, root, count, false-reject, censor, over-norm, rule or fork",
    )
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
    if args.auditors < 0:
        raise CommandError("--auditors must be 0 or more")
    if args.lying_aggregator is not None:
        from aggregator.misbehaviour import MODES

        if args.lying_aggregator not in MODES:
            raise CommandError(f"--lying-aggregator takes one of {', '.join(MODES)}")
    if args.min_updates is None:
        args.min_updates = args.nodes // 2 + 1
    if args.rule is None:
        from ledger.core.policy import DEFAULT_RULE

        args.rule = DEFAULT_RULE
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
    from aggregator.coordinator import AggregatorConfig
    from edge_node.misbehaviour import attack_named, poison_transform, tamper_at_rest
    from edge_node.node import Outcome
    from ledger.config import Settings
    from ledger.store.local import LocalBlobStore

    settings = Settings()
    blobs_dir = home_dir() / "memory" / "blobs"
    store = LocalBlobStore(blobs_dir, max_bytes=settings.max_blob_bytes)
    print(f"in-process chain: deploying the ledger and registering {args.nodes} nodes; task {task.name}", flush=True)
    max_norm = AggregatorConfig().max_norm  # norm-bounded attacks stay just under the federation's bound
    hooks: dict[int, dict[str, Any]] = {
        k: {"transform": poison_transform()} if args.attack == "nan_or_scaled" else {"attack": attack_named(args.attack, max_norm=max_norm)}
        for k in args.poison
    }
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
        attestation_quorum=args.auditors,
        misbehaviour=args.lying_aggregator,
    )
    watchers = _in_process_watchers(federation.chain, store, args.auditors)
    for watcher in watchers:  # genesis first: under the quorum, round 1 opens only on an attested genesis
        watcher.run_once()
    for _ in range(args.rounds):
        print_round(federation.run_round())
        for watcher in watchers:  # each new version is judged before the next round opens on it
            watcher.run_once()
        if set(federation.outcomes) == {Outcome.BUDGET_EXHAUSTED}:
            print(f"every node has spent its ε budget ({args.privacy.epsilon_budget}): stopping", flush=True)
            break
    print(lineage_text(federation.chain.admin, store))
    if watchers:
        print(attestations_text(federation.chain.admin, [w.store.own for w in watchers]))
    if args.serve:
        _serve_memory(args, federation.chain, store)
    return 0


def _in_process_watchers(chain: Any, store: Any, count: int) -> list[Any]:
    """`count` auditors with their own keys and folders, judging in this process (memory chain)."""
    from ledger.audit.watch import Watcher
    from ledger.store.local import LocalBlobStore
    from ledger.store.mirror import MirroredStore

    watchers = []
    for index in range(count):
        account = chain.new_account(f"demo-auditor-{index}")
        chain.admin.set_auditor(account.address, True)
        own = LocalBlobStore(home_dir() / "memory" / "auditors" / account.address, max_bytes=store.max_bytes)
        watchers.append(Watcher(chain.client(account), MirroredStore(own, store), publish=store))
    return watchers


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
    from ledger.cli.processes import spawn_logged, stop_all

    if args.nodes + args.auditors > DEV_ACCOUNT_COUNT - 1:
        raise CommandError(
            f"the devnet funds {DEV_ACCOUNT_COUNT} dev accounts: at most {DEV_ACCOUNT_COUNT - 1} nodes and auditors together"
        )
    devnet = Devnet(port=args.port) if args.port else Devnet()
    status = devnet.start()
    print(f"devnet: {devnet.rpc_url}, chain id {status.chain_id}, block {status.block_number}", flush=True)
    w3 = connect(devnet.rpc_url)
    admin, record, _ = deploy(w3, dev_account(0), attestation_quorum=args.auditors)
    print(f"deployed FederatedLedger at {record.address} (block {record.block_number})", flush=True)
    for index in range(args.nodes):
        admin.register_node(dev_account(index + 1).address)
    print(f"registered {args.nodes} nodes (dev accounts 1..{args.nodes})", flush=True)
    auditor_keys = [args.nodes + 1 + index for index in range(args.auditors)]
    for key in auditor_keys:
        admin.set_auditor(dev_account(key).address, True)
    if auditor_keys:
        print(
            f"granted the auditor role to dev accounts {auditor_keys[0]}..{auditor_keys[-1]}; "
            f"a round opens only on a version {args.auditors} auditor(s) attested ok",
            flush=True,
        )

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
            spawn_logged(
                fedledger
                + ["api", "serve", "--port", str(args.api_port), "--blobs-dir", str(blobs_dir)]
                + ["--database-url", database_url, *chain_args],
                logs / "api.log",
                env,
            )
        )
        children.append(
            spawn_logged(
                fedledger
                + ["index", "run", "--follow", "--poll-seconds", "0.2", *chain_args, "--blobs-dir", str(blobs_dir)]
                + ["--database-url", database_url, "--from-block", str(record.block_number)],
                logs / "index.log",
                env,
            )
        )
        wait_for_port("127.0.0.1", args.api_port, timeout=60)
        print(f"ledger service (blob store) at {store_url}; logs in {logs}", flush=True)
        auditor_dirs = []
        for key in auditor_keys:
            auditor_dirs.append(run_dir / f"auditor-{key}")
            command = fedledger + ["audit", "watch", *chain_args, "--dev-key", str(key), "--store", store_url]
            command += ["--auditor-dir", str(auditor_dirs[-1]), "--poll-seconds", "0.2"]
            children.append(spawn_logged(command, logs / f"auditor-{key}.log", env))
        services = len(children)
        for index in range(args.nodes):
            command = fedledger + ["node", "run", *chain_args, *task_args, "--dev-key", str(index + 1), "--store", store_url]
            command += ["--node-index", str(index), "--num-nodes", str(args.nodes), "--rounds", str(args.rounds)]
            if not args.iid:
                command += ["--non-iid", "--alpha", str(args.alpha)]
            if index in args.tamper:
                command += ["--misbehave", "tamper", "--tamper-dir", str(blobs_dir)]
            elif index in args.poison:
                command += ["--misbehave", "poison" if args.attack == "nan_or_scaled" else args.attack]
            children.append(spawn_logged(command, logs / f"node-{index}.log", env))
        node_processes = children[services:]
        aggregator_command = fedledger + ["aggregator", "run", *chain_args, *task_args, "--dev-key", "0", "--store", store_url]
        aggregator_command += ["--rounds", str(args.rounds), "--rule", args.rule, "--min-updates", str(args.min_updates)]
        aggregator_command += ["--round-seconds", str(args.round_seconds), *policy_argv(args)]
        if args.lying_aggregator:
            aggregator_command += ["--misbehave", args.lying_aggregator]
        aggregator = subprocess.Popen(aggregator_command, env=env)
        children.append(aggregator)
        _watch(aggregator, node_processes, logs)
        if aggregator.returncode != 0:
            raise CommandError(f"the aggregator failed (exit {aggregator.returncode}); node logs in {logs}")
        for child in node_processes:
            try:
                child.wait(timeout=NODE_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.terminate()
        store = HttpBlobStore.from_ledger(store_url, admin, account=None, max_bytes=512 << 20)
        print(lineage_text(admin, store), flush=True)
        if auditor_keys:
            _wait_attested(admin, len(auditor_keys))
            print(attestations_text(admin, [store]), flush=True)
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
        stop_all(children)
    return 0


def _migrate(database_url: str) -> None:
    from ledger.index.db import make_engine, upgrade

    engine = make_engine(database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def _wait_attested(client: Any, auditors: int, timeout: float = 120.0) -> None:
    """Until every auditor has attested every committed version."""
    from ledger.chain.rounds import committed_models
    from ledger.core.polling import poll_until

    def done() -> bool:
        for version in committed_models(client):
            counts = client.attestation_counts(version.model_hash)
            if counts.ok + counts.failed < auditors:
                return False
        return True

    poll_until(done, timeout=timeout, interval=0.2, what=f"{auditors} auditor(s) to attest every version")


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


# ------------------------------------------------------------------ lineage and attestations


def attestations_text(client: Any, stores: Any) -> str:
    """Each auditor's verdict per version, with the finding kinds of its report (from any of `stores`)."""
    from ledger.chain import events
    from ledger.cli.report import AttestationRow, format_attestations
    from ledger.core.safe_json import parse_untrusted_json

    versions = {e.model_hash: e.version for e in client.events(event_type=events.ModelCommitted)}
    rows = []
    for attested in client.events(event_type=events.VersionAttested):
        kinds: tuple[str, ...] = ()
        for store in stores:
            try:
                report = parse_untrusted_json(store.get(attested.report_hash))
                kinds = tuple(dict.fromkeys(f["kind"] for f in report["verdict"]["findings"]))
                break
            except Exception:  # not in this store, or not a report: the verdict still shows
                continue
        rows.append(AttestationRow(versions.get(attested.model_hash, -1), attested.model_hash, attested.auditor, attested.ok, kinds))
    return format_attestations(rows)


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
