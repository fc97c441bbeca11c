"""`fedledger bench gas`: gas per contract call, measured on the in-process py-evm chain.

Finalize is measured after real rounds in which 1, 10 and 100 nodes submitted, with the real
Merkle root of their hashes, to show its cost does not grow with the number of updates.
"""

from __future__ import annotations

import argparse
import hashlib
from typing import Any

from ledger.cli.bench.common import add_output_arguments, emit, median

SUBMIT_TARGET = 55_000
FINALIZE_TARGET = 90_000
FINALIZE_SPREAD_TARGET = 0.01
INCLUDED_COUNTS = (1, 10, 100)


def _hash(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def measure_gas() -> dict[str, Any]:
    from ledger.core.merkle import merkle_root
    from ledger.chain.inprocess import start_in_process_ledger

    ledger = start_in_process_ledger(node_count=0)
    admin = ledger.admin
    gas: dict[str, Any] = {}
    register = []
    for index in range(max(INCLUDED_COUNTS)):
        account = ledger.new_account(f"bench-node-{index}")
        register.append(admin.register_node(account.address).gas_used)
        ledger.nodes.append(ledger.client(account))
    gas["registerNode"] = int(median(register))
    genesis = _hash("genesis")
    gas["commitGenesis"] = admin.commit_genesis(genesis, _hash("genesis-meta")).gas_used

    base = genesis
    finalize: dict[str, int] = {}
    submit_first: list[int] = []
    submit_later: list[int] = []
    open_round: list[int] = []
    for round_number, count in enumerate(INCLUDED_COUNTS, start=1):
        open_round.append(admin.open_round(round_number, base, ledger.now() + 3600, count).gas_used)
        hashes = []
        for position, node in enumerate(ledger.nodes[:count]):
            update = _hash(f"update-{round_number}-{position}")
            hashes.append(bytes.fromhex(update))
            used = node.submit_update(round_number, update, 100 + position).gas_used
            (submit_first if position == 0 else submit_later).append(used)
        model = _hash(f"model-{round_number}")
        root = merkle_root(hashes)
        finalize[str(count)] = admin.finalize_round(round_number, model, root, count, _hash(f"meta-{round_number}")).gas_used
        base = model

    # A rejection and an abandoned round, for completeness.
    admin.open_round(len(INCLUDED_COUNTS) + 1, base, ledger.now() + 60, 1)
    ledger.nodes[0].submit_update(len(INCLUDED_COUNTS) + 1, _hash("bad"), 1)
    rejected_node = ledger.nodes[0].account
    assert rejected_node is not None
    gas["rejectUpdate"] = admin.reject_update(len(INCLUDED_COUNTS) + 1, rejected_node.address, 7).gas_used
    ledger.advance_time(61)
    gas["abandonRound"] = admin.abandon_round(len(INCLUDED_COUNTS) + 1, 1).gas_used

    gas["openRound"] = int(median(open_round))
    gas["submitUpdate_first"] = int(median(submit_first))
    gas["submitUpdate_later"] = int(median(submit_later))
    gas["finalizeRound"] = finalize
    finalize_values = list(finalize.values())
    spread = (max(finalize_values) - min(finalize_values)) / min(finalize_values)
    submit_max = max(gas["submitUpdate_first"], gas["submitUpdate_later"])
    return {
        "benchmark": "gas",
        "chain": "in-process py-evm (web3 EthereumTesterProvider)",
        "gas": gas,
        "finalize_spread": round(spread, 5),
        "targets": {
            "submitUpdate_max": SUBMIT_TARGET,
            "finalizeRound_max": FINALIZE_TARGET,
            "finalize_spread_max": FINALIZE_SPREAD_TARGET,
        },
        "meets_targets": submit_max <= SUBMIT_TARGET
        and max(finalize_values) <= FINALIZE_TARGET
        and spread <= FINALIZE_SPREAD_TARGET,
    }


def add_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("gas", help="gas used by each contract call on the in-process chain")
    add_output_arguments(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    report = measure_gas()
    emit(report, as_json=args.json)
    return 0 if report["meets_targets"] else 1
