"""`fedledger demo`: a real federation — aggregator and N edge nodes — on a devnet or in one process.

With `--chain anvil` (default) it starts the devnet if none runs, deploys a fresh ledger, serves
the blob store over HTTP, and runs the aggregator, every node and every auditor as separate OS
processes (`fedledger aggregator run`, `fedledger node run`, `fedledger audit watch`). With `--chain memory` everything runs in this
process on the in-process chain. Either way it federates `--task` (default digits-mlp) on shares of
the task's bundled data, prints a table per round and the lineage at the end (or, with `--json`,
one JSON document), with `--auditors K` every auditor's verdict on every version (a lying
aggregator's versions attested failed, naming what it did), and says what it is doing while it waits: each child as it
starts and becomes ready, each node's submission as it lands (the children log JSON lines to their
files under var/demo/; the demo relays the ones that matter).

Everything is checked before anything starts: the rule and its parameters, the node indexes.
Threads are pinned: every node and the aggregator share the machine's cores, so each runs on
`--threads` torch threads (default one, and never more than the cores divided among the
processes): the demo never oversubscribes the machine.

This module and the CLI are the composition root: they import `aggregator` and `edge_node`, which
never import each other.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.cli.node import ATTACKS
from ledger.cli.processes import spawn_logged, stop_all
from ledger.config import home_dir

if TYPE_CHECKING:
    from ledger.core.task import Task

log = logging.getLogger(__name__)

NODE_EXIT_TIMEOUT = 60.0
CHILD_READY_TIMEOUT = 300.0
# The node events the demo relays from the children's JSON log lines (training epochs stay in the files).
# A node's readiness is said as its start-up time; the aggregator's ready line is relayed whole: it
# names the pinned encoding and privacy, once for the federation.
RELAYED_EVENTS = frozenset({"submitted", "skipped", "round_closed", "outcome"})
ROUND_EVENTS = frozenset({"round_opened", "committed", "abandoned"})
QUIET: frozenset[str] = frozenset()


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from ledger.cli.aggregator import add_rule_arguments
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
    add_rule_arguments(demo)
    demo.add_argument("--min-updates", type=int, default=None, help="default: a majority of the nodes")
    demo.add_argument("--round-seconds", type=int, default=None, help="submission window per round, in chain time (default: sized from the federation, at least 60 s)")
    demo.add_argument("--threads", type=int, default=None, help="torch threads per process (default 1, never more than cores / processes)")
    demo.add_argument("--port", type=int, default=None, help="devnet port (default 8545)")
    demo.add_argument("--api-port", type=int, default=8600)
    demo.add_argument("--serve", action="store_true", help="afterwards keep serving the audit page and API until Ctrl-C")
    demo.add_argument("--json", action="store_true", help="print the rounds and the lineage as one JSON document at the end")
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
    from ledger.cli.aggregator import checked_rule
    from ledger.cli.errors import UsageError
    from ledger.cli.policy_options import privacy_policy
    from ledger.cli.wiring import resolve_task

    args.privacy = privacy_policy(args)  # refuse incomplete DP options before anything starts
    bad = sorted(set(args.tamper) | set(args.poison))
    if any(not 0 <= k < args.nodes for k in bad):
        raise UsageError(f"--tamper/--poison take node indexes 0..{args.nodes - 1}")
    if args.nodes < 1 or args.rounds < 1 or (args.round_seconds is not None and args.round_seconds < 1):
        raise UsageError("--nodes, --rounds and --round-seconds must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    args.rule_params = checked_rule(args)
    if args.auditors < 0:
        raise UsageError("--auditors must be 0 or more")
    if args.lying_aggregator is not None:
        from aggregator.misbehaviour import MODES

        if args.lying_aggregator not in MODES:
            raise UsageError(f"--lying-aggregator takes one of {', '.join(MODES)}")
    if args.min_updates is None:
        args.min_updates = args.nodes // 2 + 1
    if args.threads is None:
        from ledger.core.threads import DEFAULT_THREADS, threads_per_process

        processes = args.nodes + 1 if args.chain == "anvil" else 1
        args.threads = min(DEFAULT_THREADS, threads_per_process(processes))
    honest = args.nodes - len(bad)
    needs = 2 * args.rule_params["num_byzantine"] + 3 if args.rule == "krum" else 1
    if honest < needs:
        log.warning(
            "krum with num_byzantine=%d needs %d valid updates per round and at most %d nodes are honest: "
            "its rounds will be abandoned (reason rule_refused) after their deadline",
            args.rule_params["num_byzantine"], needs, honest,
        )  # fmt: skip
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
    from aggregator.coordinator import AggregatorConfig
    from edge_node.misbehaviour import attack_named, poison_transform, tamper_at_rest
    from edge_node.node import Outcome
    from ledger.cli.federation import start_federation
    from ledger.cli.report import print_round
    from ledger.config import Settings
    from ledger.core.progress import report
    from ledger.core.heap import freeze_heap
    from ledger.core.threads import cores, pin_threads
    from ledger.store.local import LocalBlobStore

    pin_threads(args.threads)
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("edge_node").setLevel(logging.WARNING)  # N nodes in one process: their lines would interleave
    settings = Settings()
    blobs_dir = home_dir() / "memory" / "blobs"
    store = LocalBlobStore(blobs_dir, max_bytes=settings.max_blob_bytes)
    report(log, "starting", "in-process chain: deploying the ledger and registering {nodes} nodes; task {task}", nodes=args.nodes, task=task.name)
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
        # The nodes may train side by side, one torch thread each, as many at once as there are cores
        # (when the first round, in turns, shows training was most of their time: `side_by_side`).
        parallel=max(1, cores() // args.threads),
        rule=args.rule,
        rule_params=args.rule_params,
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
    for node in federation.nodes:
        node.warm_up()
    freeze_heap()
    seconds = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        result = federation.run_round()
        seconds.append(time.perf_counter() - started)
        for index, outcome in enumerate(federation.outcomes):
            report(log, "node", "round {round}: node {index} {outcome}", round=result.round, index=index, outcome=outcome.value)
        if not args.json:
            print_round(result)
        for watcher in watchers:  # each new version is judged before the next round opens on it
            watcher.run_once()
        if set(federation.outcomes) == {Outcome.BUDGET_EXHAUSTED}:
            report(log, "budget", "every node has spent its ε budget ({budget}): stopping", budget=args.privacy.epsilon_budget)
            break
    attestations = attestation_rows(federation.chain.admin, [w.store.own for w in watchers]) if watchers else None
    _finish(args, federation.chain.admin, store, chain="memory", seconds=seconds, attestations=attestations)
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
        print(f"audit page: http://127.0.0.1:{args.api_port}/  (API under /api/v1; Ctrl-C to stop)", file=sys.stderr, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


# ------------------------------------------------------------------ anvil


class _Child:
    """One child process of the demo, its log file, and how far the demo has read it."""

    def __init__(
        self,
        name: str,
        command: list[str],
        log_path: Path,
        env: dict[str, str],
        *,
        relay: frozenset[str] | None,
        stdout: Any = None,
    ) -> None:
        """`relay`: the events to repeat (None: all); `stdout`: where results go (None: into the log)."""
        self.name = name
        self.log_path = log_path
        self.relay = relay
        self.offset = 0
        self.ready = False
        self.reported_exit = False
        self.started = time.monotonic()
        self.records: list[dict[str, Any]] = []  # the round events, for the per-round times
        if stdout is None:
            self.process = spawn_logged(command, log_path, env)
        else:
            with log_path.open("wb") as log_file:
                self.process = subprocess.Popen(command, stdout=stdout, stderr=log_file, stdin=subprocess.DEVNULL, env=env)

    def new_lines(self) -> list[str]:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        complete = data.rfind(b"\n") + 1
        self.offset += complete
        return data[:complete].decode("utf-8", errors="replace").splitlines()


def _relay(children: Sequence[_Child]) -> None:
    """Say what the children did since the last look: readiness, submissions, warnings, exits."""
    from ledger.core.progress import report

    for child in children:
        for line in child.new_lines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a plain line (the API's banner): it stays in the log file
            if not isinstance(record, dict):
                continue
            event, level = record.get("event"), record.get("level")
            if event in ROUND_EVENTS:
                child.records.append(record)
            if event == "ready" and not child.ready:
                child.ready = True
                report(log, "child_ready", "{name} ready after {seconds:.1f} s", name=child.name, seconds=time.monotonic() - child.started)
            if child.relay is None or event in child.relay or level in ("warning", "error"):
                report(log, "child", "{name}: {message}", name=child.name, message=record.get("message"))
        if not child.reported_exit and child.process.poll() not in (None, 0):
            child.reported_exit = True
            report(log, "child_exit", "{name} exited with code {code}: see {path}", name=child.name, code=child.process.returncode, path=str(child.log_path))


def _prepare_ledger(args: argparse.Namespace) -> tuple[Any, Any, Any, Any, list[int]]:
    """Start the devnet, deploy a fresh ledger, register the nodes and grant the auditors: (devnet, w3, admin, record, auditor keys)."""
    from ledger.chain.connect import connect
    from ledger.chain.deploy import deploy
    from ledger.chain.devkeys import DEV_ACCOUNT_COUNT, dev_account
    from ledger.chain.devnet import Devnet
    from ledger.cli.errors import UsageError
    from ledger.core.progress import report

    if args.nodes + args.auditors > DEV_ACCOUNT_COUNT - 1:
        raise UsageError(
            f"the devnet funds {DEV_ACCOUNT_COUNT} dev accounts: at most {DEV_ACCOUNT_COUNT - 1} nodes and auditors together"
        )
    devnet = Devnet(port=args.port) if args.port else Devnet()
    status = devnet.start()
    report(log, "devnet", "devnet: {url}, chain id {chain_id}, block {block}", url=devnet.rpc_url, chain_id=status.chain_id, block=status.block_number)
    w3 = connect(devnet.rpc_url)
    admin, record, _ = deploy(w3, dev_account(0), attestation_quorum=args.auditors)
    report(log, "deployed", "deployed FederatedLedger at {address} (block {block})", address=record.address, block=record.block_number)
    for index in range(args.nodes):
        admin.register_node(dev_account(index + 1).address)
    report(log, "registered", "registered {nodes} nodes (dev accounts 1..{nodes})", nodes=args.nodes)
    auditor_keys = [args.nodes + 1 + index for index in range(args.auditors)]
    for key in auditor_keys:
        admin.set_auditor(dev_account(key).address, True)
    if auditor_keys:
        report(
            log,
            "auditors",
            "granted the auditor role to dev accounts {first}..{last}; a round opens only on a version {auditors} auditor(s) attested ok",
            first=auditor_keys[0],
            last=auditor_keys[-1],
            auditors=args.auditors,
        )
    return devnet, w3, admin, record, auditor_keys


def _node_command(args: argparse.Namespace, index: int, role_args: list[str], store_url: str, blobs_dir: Path) -> list[str]:
    """`fedledger node run` for demo node `index` (dev account index + 1), with its misbehaviour if any."""
    command = ["--log-format", "json", "node", "run", *role_args, "--dev-key", str(index + 1)]
    command += ["--store", store_url, "--node-index", str(index), "--num-nodes", str(args.nodes)]
    command += ["--rounds", str(args.rounds), "--threads", str(args.threads)]
    if not args.iid:
        command += ["--non-iid", "--alpha", str(args.alpha)]
    if index in args.tamper:
        command += ["--misbehave", "tamper", "--tamper-dir", str(blobs_dir)]
    elif index in args.poison:
        command += ["--misbehave", "poison" if args.attack == "nan_or_scaled" else args.attack]
    return command


def _aggregator_command(args: argparse.Namespace, role_args: list[str], store_url: str) -> list[str]:
    """`fedledger aggregator run` with the demo's rule, policy, window and (if asked) its lie."""
    from ledger.cli.policy_options import policy_argv

    command = ["--log-format", "json", "aggregator", "run", *role_args, "--dev-key", "0"]
    command += ["--store", store_url, "--rounds", str(args.rounds), "--rule", args.rule]
    command += ["--min-updates", str(args.min_updates)]
    if args.round_seconds is not None:
        command += ["--round-seconds", str(args.round_seconds)]
    command += ["--threads", str(args.threads), *policy_argv(args)]
    if args.lying_aggregator:
        command += ["--misbehave", args.lying_aggregator]
    for name, value in args.rule_params.items():
        command += ["--rule-param", f"{name}={json.dumps(value)}"]
    return command


def _run_anvil(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from ledger.cli.errors import CommandError
    from ledger.core.polling import poll_until
    from ledger.core.progress import report
    from ledger.store.http import HttpBlobStore

    devnet, w3, admin, record, auditor_keys = _prepare_ledger(args)

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
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    children: list[_Child] = []
    try:
        api = _Child(
            "api",
            fedledger + ["api", "serve", "--port", str(args.api_port), "--blobs-dir", str(blobs_dir)]
            + ["--database-url", database_url, *chain_args],
            logs / "api.log",
            env,
            relay=QUIET,
        )  # fmt: skip
        children.append(api)
        children.append(
            _Child(
                "indexer",
                fedledger + ["--log-format", "json", "index", "run", "--follow", "--poll-seconds", "0.2", *chain_args]
                + ["--blobs-dir", str(blobs_dir), "--database-url", database_url, "--from-block", str(record.block_number)],
                logs / "index.log",
                env,
                relay=QUIET,
            )
        )  # fmt: skip
        report(log, "starting", "started the ledger service (pid {pid}) and the indexer (pid {indexer}); logs in {logs}",
               pid=api.process.pid, indexer=children[1].process.pid, logs=str(logs))

        def service_answers() -> bool:
            if api.process.poll() is not None:
                raise CommandError(f"the ledger service exited with code {api.process.returncode}: see {api.log_path}")
            return _answers(store_url)

        poll_until(service_answers, timeout=CHILD_READY_TIMEOUT, interval=0.2, what="the ledger service")
        report(log, "service", "ledger service (blob store) at {url}", url=store_url)

        for key in auditor_keys:
            command = fedledger + ["audit", "watch", *chain_args, "--dev-key", str(key), "--store", store_url]
            command += ["--auditor-dir", str(run_dir / f"auditor-{key}"), "--poll-seconds", "0.2"]
            children.append(_Child(f"auditor {key}", command, logs / f"auditor-{key}.log", env, relay=QUIET))
        nodes: list[_Child] = []
        for index in range(args.nodes):
            command = fedledger + _node_command(args, index, [*chain_args, *task_args], store_url, blobs_dir)
            nodes.append(_Child(f"node {index}", command, logs / f"node-{index}.log", env, relay=RELAYED_EVENTS))
        children += nodes
        report(log, "starting", "started {count} nodes ({threads} torch thread(s) each); waiting for them to be ready",
               count=args.nodes, threads=args.threads)

        def nodes_ready() -> bool:
            _relay(children)
            failed = [child for child in nodes if child.process.poll() is not None]
            if failed:
                raise CommandError(f"{failed[0].name} exited with code {failed[0].process.returncode}: see {failed[0].log_path}")
            return all(child.ready for child in nodes)

        poll_until(nodes_ready, timeout=CHILD_READY_TIMEOUT, interval=0.2, what="the nodes to start")
        aggregator_command = fedledger + _aggregator_command(args, [*chain_args, *task_args], store_url)
        report(log, "starting", "starting the aggregator ({rounds} rounds)", rounds=args.rounds)
        # Its round tables go to our stdout (a file with --json); its progress is relayed from its log.
        tables = (logs / "aggregator.out").open("wb") if args.json else sys.stdout
        try:
            aggregator = _Child("aggregator", aggregator_command, logs / "aggregator.log", env, relay=None, stdout=tables)
            children.append(aggregator)
            while aggregator.process.poll() is None:
                _relay(children)
                time.sleep(0.2)
        finally:
            if tables is not sys.stdout:
                tables.close()
        _relay(children)
        if aggregator.process.returncode != 0:
            raise CommandError(f"the aggregator failed (exit {aggregator.process.returncode}): see {aggregator.log_path}")
        seconds = _round_seconds(aggregator.records)
        for child in nodes:
            try:
                child.process.wait(timeout=NODE_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.process.terminate()
        store = HttpBlobStore.from_ledger(store_url, admin, account=None, max_bytes=512 << 20)
        attestations = None
        if auditor_keys:
            _wait_attested(admin, len(auditor_keys))
            attestations = attestation_rows(admin, [store])
        _wait_indexed(store_url, int(w3.eth.block_number))
        _finish(args, admin, store, chain="anvil", seconds=seconds, attestations=attestations)
        if args.serve:
            print(f"audit page: {store_url}/  (API under {store_url}/api/v1; Ctrl-C to stop)", file=sys.stderr, flush=True)
            try:
                api.process.wait()
            except KeyboardInterrupt:
                pass
        else:
            report(log, "indexed", "indexed; `fedledger demo --serve` keeps the audit page up at {url}/", url=store_url)
    finally:
        stop_all([child.process for child in children])
    return 0


def _round_seconds(records: Sequence[dict[str, Any]]) -> list[float]:
    """Each round's seconds from its opening to its commit (or abandon), from the aggregator's log times."""
    from datetime import datetime

    opened: dict[int, float] = {}
    took = []
    for record in records:
        moment = datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00")).timestamp()
        if record.get("event") == "round_opened":
            opened[int(record["round"])] = moment
        elif int(record.get("round", -1)) in opened:
            took.append(moment - opened.pop(int(record["round"])))
    return took


def _answers(url: str) -> bool:
    import requests

    try:
        requests.head(f"{url}/blobs/{'0' * 64}", timeout=2)
        return True
    except requests.RequestException:
        return False


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


# ------------------------------------------------------------------ the end


def attestation_rows(client: Any, stores: Any) -> list[Any]:
    """Each auditor's verdict per version, with the finding kinds of its report (from any of `stores`)."""
    from ledger.chain import events
    from ledger.cli.report import AttestationRow
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
    return rows


def _finish(
    args: argparse.Namespace, client: Any, store: Any, *, chain: str, seconds: Sequence[float], attestations: Sequence[Any] | None = None
) -> None:
    """The lineage table, the auditors' `attestations` (if any) and the time per round, or the whole
    run as one JSON document with `--json`.

    A round's time runs from its opening to its commit (or abandon): the federation's pace, without
    the processes' start-up.
    """
    from dataclasses import asdict

    from ledger.cli.bench.common import median
    from ledger.cli.report import format_attestations, format_lineage
    from ledger.cli.rounds import round_status
    from ledger.cli.versions import version_rows
    from ledger.core.progress import report

    rows = version_rows(client, store)
    per_round = {
        "rounds": len(seconds),
        "mean": round(sum(seconds) / len(seconds), 3) if seconds else None,
        "median": round(median(list(seconds)), 3) if seconds else None,
    }
    if not args.json:
        print(format_lineage(rows), flush=True)
        if attestations is not None:
            print(format_attestations(attestations), flush=True)
        report(log, "pace", "{rounds} rounds: {mean} s per round on average (median {median} s)", **per_round)
        return
    document = {
        "chain": chain,
        "ledger": client.address,
        "nodes": args.nodes,
        "rule": {"name": args.rule, "params": args.rule_params},
        "rounds": [round_status(client, number) for number in range(1, client.counters().last_round + 1)],
        "versions": [asdict(row) for row in rows],
        "seconds_per_round": {**per_round, "each": [round(value, 3) for value in seconds]},
    }
    if attestations is not None:
        document["attestations"] = [asdict(row) for row in sorted(attestations, key=lambda r: (r.version, r.auditor))]
    print(json.dumps(document, indent=2), flush=True)
