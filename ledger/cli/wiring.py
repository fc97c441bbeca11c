"""Builds a process's runtime pieces from its command line: chain client, signing key, store.

Every long-running command (edge node, aggregator, audit) takes the same chain and store options
and resolves them the same way, here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eth_account.signers.local import LocalAccount

from ledger.chain.client import LedgerClient
from ledger.config import Settings
from ledger.store.base import BlobStore
from ledger.store.local import LocalBlobStore


def add_ledger_arguments(parser: argparse.ArgumentParser, *, signing: bool = True) -> None:
    """--rpc-url, --contract, the key (if `signing`) and the store."""
    parser.add_argument("--rpc-url", help="JSON-RPC endpoint (default $FEDLEDGER_RPC_URL or the devnet)")
    parser.add_argument("--contract", help="ledger address (default: var/deployments/<chainId>.json)")
    if signing:
        keys = parser.add_mutually_exclusive_group(required=True)
        keys.add_argument("--keystore", type=Path, help="encrypted keystore; password in $FEDLEDGER_KEYSTORE_PASSWORD")
        keys.add_argument("--dev-key", type=int, metavar="INDEX", help="anvil dev account INDEX (devnet only)")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--store", metavar="URL", help="ledger service URL serving /blobs (HTTP store)")
    store.add_argument("--blobs-dir", type=Path, help="local content-addressed folder (default var/blobs)")


def ledger_client(args: argparse.Namespace, *, account: LocalAccount | None) -> LedgerClient:
    from ledger.chain.connect import connect
    from ledger.chain.deploy import load_deployment

    settings = Settings().with_overrides(rpc_url=args.rpc_url, contract_address=args.contract)
    w3 = connect(settings.rpc_url)
    address = settings.contract_address or load_deployment(w3).address
    return LedgerClient(w3, address, account)


def signing_account(args: argparse.Namespace) -> LocalAccount:
    from ledger.chain.keys import resolve_account

    return resolve_account(keystore=args.keystore, dev_key_index=args.dev_key)


def blob_store(args: argparse.Namespace, client: LedgerClient) -> BlobStore:
    """The HTTP store when --store is given (uploads signed with the client's key), else a local folder."""
    settings = Settings().with_overrides(blobs_dir=args.blobs_dir)
    if args.store:
        from ledger.store.http import HttpBlobStore

        return HttpBlobStore.from_ledger(
            args.store, client, account=client.account, max_bytes=settings.max_blob_bytes
        )
    return LocalBlobStore(settings.blobs_dir, max_bytes=settings.max_blob_bytes)


def deployment_block(client: LedgerClient) -> int:
    """The block the ledger was deployed in (its deployment record's), else 0: where reading starts."""
    from ledger.chain.deploy import DeploymentNotFound, load_deployment

    try:
        record = load_deployment(client.w3)
    except DeploymentNotFound:
        return 0
    return record.block_number if record.address == client.address else 0
