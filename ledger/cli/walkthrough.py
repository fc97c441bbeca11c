"""`fedledger walkthrough`: one round of the contract on the devnet with placeholder hashes.

Shows, transaction by transaction and with the gas each cost, what a federated round records on
chain: deploy, register nodes, genesis, open, submit, reject, finalize with a Merkle root. It
deploys its own ledger on the running devnet and records it nowhere, so it never resets the chain
nor touches the deployment `fedledger deploy` recorded.
"""

from __future__ import annotations

import argparse
import hashlib

from ledger.chain.client import LedgerClient, TxResult


def _placeholder(label: str) -> str:
    return hashlib.sha256(f"fedledger-placeholder:{label}".encode()).hexdigest()


def _show(result: TxResult, detail: str = "") -> None:
    print(f"  {result.function:<14} block {result.block_number:>5}  gas {result.gas_used:>9,}  tx 0x{result.tx_hash[:16]}…  {detail}")


def run_walkthrough(admin: LedgerClient, nodes: list[LedgerClient]) -> None:
    from ledger.core.merkle import merkle_root

    for node in nodes:
        _show(admin.register_node(node.account.address), f"node {node.account.address}")  # type: ignore[union-attr]
    genesis = _placeholder("genesis")
    _show(admin.commit_genesis(genesis, _placeholder("genesis-metadata")), f"genesis {genesis[:12]}…")
    counters = admin.counters()
    round_number = counters.last_round + 1
    from ledger.chain.clock import ChainClock

    deadline = ChainClock(admin.w3).next_timestamp() + 600  # chain time: the latest block may be old
    _show(admin.open_round(round_number, genesis, deadline, len(nodes) - 1), f"round {round_number}")
    included = []
    for index, node in enumerate(nodes):
        update = _placeholder(f"update-{round_number}-{index}")
        _show(node.submit_update(round_number, update, 100 + index), f"update {update[:12]}…")
        if index < len(nodes) - 1:
            included.append(bytes.fromhex(update))
    rejected = nodes[-1].account.address  # type: ignore[union-attr]
    _show(admin.reject_update(round_number, rejected, 1), "reason 1 (hash mismatch, placeholder)")
    model = _placeholder(f"model-{round_number}")
    root = merkle_root(included)
    _show(
        admin.finalize_round(round_number, model, root, len(included), _placeholder("metadata")),
        f"model {model[:12]}… root {root.hex()[:12]}… included {len(included)}",
    )


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "walkthrough", help="deploy a throwaway ledger on the devnet and walk one round with placeholder hashes"
    )
    parser.add_argument("--rpc-url", default=None, help="the devnet's JSON-RPC endpoint (default $FEDLEDGER_RPC_URL or 127.0.0.1:8545)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ledger.chain.devkeys import dev_account
    from ledger.cli.errors import UsageError
    from ledger.cli.wiring import connect_chain

    if not 2 <= args.nodes <= 20:
        raise UsageError("--nodes must be in 2..20")
    w3 = connect_chain(args)
    admin, result = LedgerClient.deploy(w3, dev_account(0))  # dev keys: refused on any chain but the devnet
    print(f"deployed a walkthrough ledger at {admin.address} on chain {admin.chain_id} (not recorded; your deployment is untouched)")
    _show(result)
    nodes = [admin.as_account(dev_account(i)) for i in range(1, args.nodes + 1)]
    run_walkthrough(admin, nodes)
    print("done; the devnet keeps running (stop it with `fedledger devnet stop`)")
    return 0
