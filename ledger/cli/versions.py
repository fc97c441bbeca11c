"""`fedledger versions`: every committed model version, genesis first, as a table or JSON.

The lineage comes from the chain's `ModelCommitted` events; the accuracy column from each
version's metadata blob when the store has it (a missing blob costs the column, not the row).
Wherever a command takes a model hash, `latest` names the newest of these versions.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from ledger.cli.wiring import add_chain_arguments, add_store_arguments

    versions = subparsers.add_parser("versions", help="the committed model versions, genesis first")
    add_chain_arguments(versions)
    add_store_arguments(versions)
    versions.add_argument("--json", action="store_true", help="print JSON")
    versions.set_defaults(handler=_run)


def version_rows(client: Any, store: Any) -> list[Any]:
    """One `LineageRow` per committed version following the latest one's parents back to genesis."""
    from ledger.chain.rounds import committed_models, lineage
    from ledger.cli.report import LineageRow
    from ledger.core.metadata import MetadataError, RoundRecord, decode
    from ledger.store.base import BlobStoreError

    versions = committed_models(client)
    if not versions:
        return []
    rows = []
    for step in reversed(lineage(client, versions[-1].model_hash)):
        accuracy = None
        if step.metadata_hash is not None:
            try:
                record = decode(store.get(step.metadata_hash))
            except (BlobStoreError, MetadataError):
                record = None
            if isinstance(record, RoundRecord) and isinstance(record.metrics.get("test_accuracy"), float):
                accuracy = record.metrics["test_accuracy"]
        rows.append(LineageRow(step.version, step.round, step.model_hash, step.included_count, accuracy))
    return rows


def _run(args: argparse.Namespace) -> int:
    from ledger.cli.report import format_lineage
    from ledger.cli.wiring import blob_store, ledger_client

    client = ledger_client(args, account=None)
    rows = version_rows(client, blob_store(args, client))
    if args.json:
        print(json.dumps({"ledger": client.address, "versions": [asdict(row) for row in rows]}, indent=2))
    elif not rows:
        print(f"ledger {client.address}: no version committed yet")
    else:
        print(f"ledger {client.address}: {len(rows)} versions, latest v{rows[-1].version} {rows[-1].model_hash}")
        print(format_lineage(rows))
    return 0
