"""`fedledger export`: a committed version as files to deploy, with a signed provenance statement, and its check.

    fedledger export MODEL_HASH|latest --out DIR [--format both|onnx|safetensors] [--int8] --signing-key KEY.pem
    fedledger export verify DIR --public-key KEY.pub [--rpc-url URL] [--contract ADDR]

Export reads the version's record from the chain, fetches and re-hashes its blobs, writes the
safetensors and/or ONNX files (parity with ONNX Runtime checked on the held-out split), the
pinned metadata blobs and `provenance.json`, and signs the folder with model-signing. Verify
checks the signature, every file's digest and weights, and every fact the statement claims
against the chain: exit 0 when all hold, 1 naming each that does not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

USAGE = """fedledger export MODEL_HASH|latest --out DIR [--format {both,onnx,safetensors}] [--int8]
                        (--signing-key KEY.pem | --unsigned) [chain and store options]
       fedledger export verify DIR (--public-key KEY.pub | --unsigned) [--rpc-url URL] [--contract ADDR]"""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export",
        usage=USAGE,
        help="write a committed version as ONNX/safetensors with signed provenance, or verify such a folder",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="`fedledger export MODEL_HASH --help` and `fedledger export verify --help` list each form's options.",
    )
    export.add_argument("target", metavar="MODEL_HASH|latest|verify", help="the version to export, or `verify`")
    export.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    export.set_defaults(handler=_dispatch)


def _export_parser() -> argparse.ArgumentParser:
    from ledger.cli.wiring import add_ledger_arguments

    parser = argparse.ArgumentParser(prog="fedledger export MODEL_HASH|latest", description="write a committed version as files to deploy")
    parser.add_argument("--out", type=Path, required=True, help="the folder to create (must not exist, or be empty)")
    parser.add_argument(
        "--format", default="both", choices=("both", "onnx", "safetensors"), help="which model files to write (default both)"
    )
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx (ONNX Runtime dynamic int8) with its accuracy")
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument("--signing-key", type=Path, metavar="KEY.pem", help="EC private key (`fedledger keys new --signing`); KEY.pub beside it")
    keys.add_argument("--unsigned", action="store_true", help="write no signature (provenance.json says so)")
    parser.add_argument(
        "--task", metavar="TASK",
        help="the pinned task as package.module:attr, if it is not installed under its name (its spec must be the pinned one)",
    )  # fmt: skip
    parser.add_argument("--test-data", type=Path, metavar="FILE", help="held-out examples in the task's data format, if it bundles none")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_ledger_arguments(parser, signing=False)
    return parser


def _verify_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedledger export verify", description="check an export folder's signature, files and claims against the chain"
    )
    parser.add_argument("folder", type=Path, metavar="DIR")
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument("--public-key", type=Path, metavar="KEY.pub", help="the exporter's public key (trust it from elsewhere)")
    keys.add_argument("--unsigned", action="store_true", help="check everything but a signature (e.g. an API download)")
    parser.add_argument("--rpc-url", help="JSON-RPC endpoint (default $FEDLEDGER_RPC_URL or the devnet)")
    parser.add_argument("--contract", help="ledger address (default: var/deployments/<chainId>.json)")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.target == "verify":
        return _verify(_verify_parser().parse_args(args.rest))
    return _export(args.target, _export_parser().parse_args(args.rest))


def _reader(args: argparse.Namespace) -> Any:
    """A key-less client of the ledger the options name (exit 3 if the chain does not answer)."""
    from ledger.chain.connect import ChainUnavailable
    from ledger.chain.deploy import DeploymentNotFound
    from ledger.cli.errors import CommandError, DependencyUnavailable
    from ledger.cli.wiring import ledger_client

    try:
        client = ledger_client(args, account=None)
        if not client.w3.eth.get_code(client.address):
            raise CommandError(f"no contract at {client.address} on chain {client.chain_id}: check --contract / --rpc-url")
    except ChainUnavailable as exc:
        raise DependencyUnavailable(str(exc)) from exc
    except (DeploymentNotFound, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    return client


def _export(target: str, args: argparse.Namespace) -> int:
    from ledger.cli.errors import CommandError
    from ledger.cli.wiring import blob_store, resolve_task
    from ledger.config import Settings
    from ledger.core.errors import LedgerError
    from ledger.export.facts import resolve_model_hash
    from ledger.export.folder import ExportOptions, gather, write_export

    task = resolve_task(args)[0] if args.task is not None else None
    client = _reader(args)
    max_bytes = Settings().max_blob_bytes
    try:
        model_hash = resolve_model_hash(client, target)
        sources = gather(client, blob_store(args, client), model_hash, max_bytes=max_bytes)
        options = ExportOptions(
            formats=args.format, int8=args.int8, signing_key=args.signing_key, task=task, test_data=args.test_data
        )
        result = write_export(args.out, sources, options, max_bytes=max_bytes)
    except (LedgerError, LookupError, ValueError) as exc:  # LookupError: not a committed version
        raise CommandError(str(exc)) from exc

    record = sources.record
    if args.json:
        print(json.dumps({
            "folder": str(result.folder), "model_hash": record.model_hash, "version": record.version,
            "files": dict(result.files), "signed_by": result.key_id,
            "parity": result.parity.to_json() if result.parity else None, "int8_accuracy": result.int8_accuracy,
        }, indent=2))  # fmt: skip
        return 0
    print(f"exported version {record.version} (round {record.round}) of ledger {record.contract} on chain {record.chain_id} to {result.folder}")
    for name, size in result.files.items():
        digest = result.statement["subject"]
        sha = next((s["digest"]["sha256"] for s in digest if s["name"] == name), None)
        note = "  = the model hash on chain" if sha == record.model_hash else ""
        print(f"  {name:<18} {size:>10,} bytes" + (f"  sha256 {sha}{note}" if sha else ""))
    if result.parity is not None:
        print(f"  ONNX {result.parity.describe()}")
    if result.int8_accuracy is not None and result.parity is not None:
        print(f"  int8 held-out accuracy {result.int8_accuracy:.4f} (float {result.parity.onnx_accuracy:.4f})")
    if result.key_id is not None:
        public = args.signing_key.with_suffix(".pub")
        print(f"  signed with key {result.key_id}; anyone can check it with the standard tool:")
        print(f"    model_signing verify key {result.folder} --signature {result.folder / 'model.sig'} --public_key {public}")
    else:
        print("  NOT signed (--unsigned): provenance.json says so")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ledger.config import Settings
    from ledger.export.folder import verify_export

    verdict = verify_export(args.folder, _reader(args), public_key=args.public_key, max_bytes=Settings().max_blob_bytes)
    if args.json:
        print(json.dumps(verdict.to_json(), indent=2))
        return 0 if verdict.ok else 1
    for check in verdict.checks:
        print(f"{'ok' if check.ok else 'FAILED':<7} {check.name:<14} {check.detail}")
    failed = [check.name for check in verdict.checks if not check.ok]
    if failed:
        print(f"NOT VERIFIED  {args.folder}: {len(failed)} check(s) failed ({', '.join(dict.fromkeys(failed))})")
        return 1
    print(f"VERIFIED  {args.folder}: version {verdict.version}, model {verdict.model_hash}")
    return 0
