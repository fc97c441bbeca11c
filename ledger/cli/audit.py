"""`fedledger audit verify|watch|grant|resolve`: re-derive versions, attest them on chain, govern auditors.

- verify <hash>: reads the version's record from the chain (the deployment record, or --contract),
  fetches its blobs from a local folder (--blobs-dir) or the ledger service (--store URL),
  re-hashes them, re-checks every decision against the pinned policy, re-runs the recorded rule and
  compares the result with the on-chain hash. Genesis is rebuilt with the task its metadata pins
  (installed, or named with --task); if it is not installed, the finding says which task, version
  and code hash to install. Exit 0 when the version verifies, 1 when it does not (each finding
  printed), 2 on a usage error, 3 when the chain or the store cannot be reached ("could not
  check": no verdict either way). `latest` names the newest version.
- watch: an auditor's daemon (`ledger.audit.watch`): the same re-derivation for every version as it
  is committed, the report kept in the auditor's own folder, the verdict attested on chain.
- grant / resolve: the admin's side: give (or take) the auditor role; lift a failing attestation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from ledger.cli.wiring import add_ledger_arguments, add_task_arguments

    audit = subparsers.add_parser("audit", help="check committed model versions against the chain")
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = sub.add_parser(
        "verify",
        help="re-fetch, re-hash and re-aggregate one version; exit 0 if it matches the chain, 1 if not",
    )
    verify.add_argument("model_hash", help="the version's SHA-256 (64 hex characters, 0x optional), or `latest`")
    add_ledger_arguments(verify, signing=False)
    add_task_arguments(verify, hyperparameters=False, default=None, default_help="the installed task genesis pins")
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON (the API's shape)")
    verify.set_defaults(handler=_verify)

    watch = sub.add_parser(
        "watch", help="an auditor's daemon: re-derive every committed version, keep the report, attest it on chain"
    )
    add_ledger_arguments(watch, signing=True)
    watch.add_argument(
        "--auditor-dir",
        type=Path,
        help="this auditor's own store: its reports and a copy of every blob it judged (default var/auditors/<address>)",
    )
    watch.add_argument("--confirmations", type=int, default=0, help="only judge versions this many blocks deep (default 0)")
    watch.add_argument("--poll-seconds", type=float, default=0.5, help="how often to ask for a new block where the node offers no newHeads subscription (default 0.5)")
    watch.add_argument("--from-block", type=int, default=None, help="first block to read (default: the deployment's)")
    watch.add_argument("--once", action="store_true", help="attest every confirmed version not attested yet, then exit")
    watch.set_defaults(handler=_watch)

    grant = sub.add_parser("grant", help="(admin) give ADDRESS the auditor role, or take it away with --remove")
    grant.add_argument("address", help="the auditor's account")
    grant.add_argument("--remove", action="store_true", help="take the role away (its verdicts stay on record)")
    add_ledger_arguments(grant, signing=True)
    grant.set_defaults(handler=_grant)

    resolve = sub.add_parser(
        "resolve", help="(admin) lift AUDITOR's failing attestation on a version from the quorum gate, with reasons"
    )
    resolve.add_argument("model_hash", help="the version's SHA-256")
    resolve.add_argument("auditor", help="the auditor whose failing attestation is resolved")
    resolve.add_argument("--reason", required=True, help="why (stored as a blob; its SHA-256 goes on chain)")
    add_ledger_arguments(resolve, signing=True)
    resolve.set_defaults(handler=_resolve)


def _verify(args: argparse.Namespace) -> int:
    from ledger.audit.rederive import read_chain_facts, rederive
    from ledger.cli.errors import CommandError, DependencyUnavailable
    from ledger.cli.wiring import blob_store, ledger_client, resolve_model_hash, resolve_task, settings
    from ledger.core.errors import Unavailable

    task = resolve_task(args)[0] if args.task is not None else None
    ledger = ledger_client(args, account=None)
    model_hash = resolve_model_hash(ledger, args.model_hash)
    facts = read_chain_facts(ledger, model_hash)
    if facts is None:
        raise CommandError(f"{model_hash} is not a committed model version on ledger {ledger.address}")
    try:
        store = blob_store(args, ledger)
        verdict = rederive(facts, store, max_bytes=settings(args).max_blob_bytes, task=task)
    except Unavailable as exc:  # not a verdict: nothing was fetched, so nothing was found wrong either
        raise DependencyUnavailable(f"could not check {model_hash}: {exc}") from exc
    if args.json:
        print(json.dumps(verdict.to_json(), indent=2))
    else:
        _print_verdict(verdict.to_json())
    return 0 if verdict.ok else 1


def _print_verdict(verdict: dict[str, Any]) -> None:
    print(("VERIFIED  " if verdict["verified"] else "FAILED    ") + verdict["summary"])
    print(f"  model     {verdict['model_hash']} (version {verdict['version']}, round {verdict['round']})")
    if verdict["parent_hash"]:
        print(f"  parent    {verdict['parent_hash']}")
    print(f"  metadata  {verdict['metadata_hash']}")
    if verdict["rule"]:
        print(f"  rule      {verdict['rule']['name']} {json.dumps(verdict['rule']['params'], sort_keys=True)}")
    for update_hash in verdict["updates"]:
        print(f"  update    {update_hash}")
    if verdict["policy"]:
        print(f"  policy    {json.dumps(verdict['policy'], sort_keys=True)} (pinned at genesis)")
    for check in verdict["rejections"]:
        print(f"  rejected  {check['update_hash']} of {check['node']}: {check['reason']}, {check['status']}")
    if verdict["rederived_hash"]:
        print(f"  rederived {verdict['rederived_hash']}")
    for finding in verdict["findings"]:
        print(f"  - {finding['kind']}: {finding['role']} {finding['subject']}: {finding['detail']}")
        if finding["expected"] is not None or finding["actual"] is not None:
            print(f"      expected {json.dumps(finding['expected'])}, actual {json.dumps(finding['actual'])}")


# --------------------------------------------------------------------------- watch


def build_watcher(args: argparse.Namespace, on_step: Any = None) -> Any:
    """The `Watcher` the command line describes (also used by tests that kill it at a step)."""
    from ledger.audit.watch import WatchConfig, Watcher
    from ledger.cli.errors import CommandError
    from ledger.cli.wiring import blob_store, deployment_block, ledger_client, signing_account
    from ledger.config import Settings, home_dir
    from ledger.core.errors import LedgerError
    from ledger.store.local import LocalBlobStore
    from ledger.store.mirror import MirroredStore

    settings = Settings()
    try:
        client = ledger_client(args, account=signing_account(args))
        auditor = client.account.address  # type: ignore[union-attr]
        if not client.is_auditor(auditor):
            raise CommandError(
                f"{auditor} is not an auditor of ledger {client.address}: the admin grants the role with "
                f"`fedledger audit grant {auditor}`"
            )
        from_block = args.from_block if args.from_block is not None else deployment_block(client)
        source = blob_store(args, client)
        own = LocalBlobStore(args.auditor_dir or home_dir() / "auditors" / auditor, max_bytes=settings.max_blob_bytes)
        config = WatchConfig(
            confirmations=args.confirmations, poll_seconds=args.poll_seconds, from_block=from_block, max_bytes=settings.max_blob_bytes
        )
    except (LedgerError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    publish = source if args.store else None  # reports go where the audit page finds blobs
    return Watcher(client, MirroredStore(own, source), publish=publish, config=config, on_step=on_step)


def _watch(args: argparse.Namespace) -> int:
    import threading

    watcher = build_watcher(args)
    print(
        f"auditor {watcher.auditor} watching ledger {watcher.client.address} on chain {watcher.client.chain_id} "
        f"({watcher.config.confirmations} confirmations); reports in {watcher.store.own.root}",
        flush=True,
    )

    def report(attested: Any) -> None:
        version, verdict = attested.version, attested.verdict
        kinds = ", ".join(dict.fromkeys(f.kind.value for f in verdict.findings)) or "no findings"
        print(
            f"version {version.version} ({version.model_hash[:12]}…): {'ok' if verdict.ok else 'FAILED'} ({kinds}); "
            f"report {attested.report_hash}; block {attested.block_number}; re-derived in {attested.rederive_seconds:.2f} s",
            flush=True,
        )

    if args.once:
        watcher.run_once(report)
        return 0
    stop = threading.Event()
    try:
        watcher.follow(stop, report)
    except KeyboardInterrupt:
        stop.set()
    return 0


# --------------------------------------------------------------------------- governance


def _admin_client(args: argparse.Namespace) -> Any:
    from ledger.cli.wiring import ledger_client, signing_account

    return ledger_client(args, account=signing_account(args))


def _grant(args: argparse.Namespace) -> int:
    from ledger.cli.errors import CommandError
    from ledger.core.errors import LedgerError

    try:
        admin = _admin_client(args)
        result = admin.set_auditor(args.address, not args.remove)
    except (LedgerError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    verb = "removed the auditor role from" if args.remove else "granted the auditor role to"
    print(f"{verb} {args.address} on ledger {admin.address} (block {result.block_number})")
    return 0


def _resolve(args: argparse.Namespace) -> int:
    from ledger.cli.errors import CommandError
    from ledger.cli.wiring import blob_store
    from ledger.core.errors import LedgerError
    from ledger.core.hashing import normalize_hash
    from ledger.core.safe_json import canonical_json

    try:
        admin = _admin_client(args)
        model_hash = normalize_hash(args.model_hash)
        reasons = canonical_json({"format": "fedledger-resolution/1", "model_hash": model_hash, "auditor": args.auditor, "reason": args.reason})
        resolution_hash = blob_store(args, admin).put(reasons)
        result = admin.resolve_attestation(model_hash, args.auditor, resolution_hash)
    except (LedgerError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    print(f"resolved {args.auditor}'s failing attestation on {model_hash} (reasons {resolution_hash}, block {result.block_number})")
    return 0
