"""`fedledger audit verify <hash>`: re-derive one committed model version from the chain and a blob store.

Reads the version's record from the chain (the deployment record, or --contract), fetches its
blobs from a local folder (--blobs-dir) or the ledger service (--store URL), re-hashes them,
re-runs the recorded rule and compares the result with the on-chain hash. Genesis is rebuilt with
the task its metadata pins (installed, or named with --task); if it is not installed, the finding
says which task, version and code hash to install. Exit 0 when the version verifies, 1 when it
does not (each finding printed), or on a usage error.
"""

from __future__ import annotations

import argparse
import json
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


def _verify(args: argparse.Namespace) -> int:
    from ledger.cli.errors import CommandError
    from ledger.config import Settings
    from ledger.core.errors import LedgerError
    from ledger.core.hashing import normalize_hash
    from ledger.audit.rederive import read_chain_facts, rederive
    from ledger.chain.rounds import latest_model_hash
    from ledger.cli.wiring import blob_store, ledger_client, resolve_task

    latest = args.model_hash == "latest"
    try:
        model_hash = "" if latest else normalize_hash(args.model_hash)
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    task = resolve_task(args)[0] if args.task is not None else None
    try:
        ledger = ledger_client(args, account=None)
        if not ledger.w3.eth.get_code(ledger.address):
            where = f"{ledger.address} on chain {ledger.chain_id}"
            raise CommandError(f"no contract at {where}: check --contract / --rpc-url")
        if latest:
            model_hash = latest_model_hash(ledger)
        facts = read_chain_facts(ledger, model_hash)
    except (LedgerError, LookupError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    if facts is None:
        raise CommandError(f"{model_hash} is not a committed model version on ledger {ledger.address}")

    verdict = rederive(facts, blob_store(args, ledger), max_bytes=Settings().max_blob_bytes, task=task)
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
    if verdict["rederived_hash"]:
        print(f"  rederived {verdict['rederived_hash']}")
    for finding in verdict["findings"]:
        print(f"  - {finding['kind']}: {finding['role']} {finding['subject']}: {finding['detail']}")
        if finding["expected"] is not None or finding["actual"] is not None:
            print(f"      expected {json.dumps(finding['expected'])}, actual {json.dumps(finding['actual'])}")
