"""`fedledger bench gas`: gas per contract call, measured on the in-process py-evm chain.

Finalize is measured after real rounds in which 1, 10 and 100 nodes submitted, with the real
Merkle root of their hashes, to show its cost does not grow with the number of updates. Relayed
submissions are measured per update in batches of 1, 10 and 100 signed records; the attestation
gate as the difference between opening the same first round on ledgers deployed with and without
a quorum.
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
BATCH_SIZES = (1, 10, 100)
BATCH_PER_UPDATE_TARGET = 32_000
ATTEST_TARGET = 50_000
GATE_EXTRA_TARGET = 5_000


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

    gas["submitUpdatesBySig_per_update"] = _batch_gas(ledger, base, first_round=len(INCLUDED_COUNTS) + 2)
    gas.update(_attestation_gas(ungated_first_open=open_round[0]))

    gas["openRound"] = int(median(open_round))
    gas["submitUpdate_first"] = int(median(submit_first))
    gas["submitUpdate_later"] = int(median(submit_later))
    gas["finalizeRound"] = finalize
    finalize_values = list(finalize.values())
    spread = (max(finalize_values) - min(finalize_values)) / min(finalize_values)
    submit_max = max(gas["submitUpdate_first"], gas["submitUpdate_later"])
    batch_100 = gas["submitUpdatesBySig_per_update"][str(max(BATCH_SIZES))]
    return {
        "benchmark": "gas",
        "chain": "in-process py-evm (web3 EthereumTesterProvider)",
        "gas": gas,
        "finalize_spread": round(spread, 5),
        "targets": {
            "submitUpdate_max": SUBMIT_TARGET,
            "finalizeRound_max": FINALIZE_TARGET,
            "finalize_spread_max": FINALIZE_SPREAD_TARGET,
            "submitUpdatesBySig_per_update_at_100_max": BATCH_PER_UPDATE_TARGET,
            "attestVersion_max": ATTEST_TARGET,
            "openRound_gate_extra_max": GATE_EXTRA_TARGET,
        },
        "meets_targets": submit_max <= SUBMIT_TARGET
        and max(finalize_values) <= FINALIZE_TARGET
        and spread <= FINALIZE_SPREAD_TARGET
        and batch_100 <= BATCH_PER_UPDATE_TARGET
        and gas["attestVersion"] <= ATTEST_TARGET
        and gas["openRound_gate_extra"] <= GATE_EXTRA_TARGET,
    }


def _batch_gas(ledger: Any, base: str, *, first_round: int) -> dict[str, int]:
    """Per-update gas of one relayer posting batches of signed submissions (one round per size)."""
    from ledger.chain.client import sign_submission
    from ledger.core.merkle import merkle_root

    admin = ledger.admin
    per_update: dict[str, int] = {}
    for round_number, size in enumerate(BATCH_SIZES, start=first_round):
        admin.open_round(round_number, base, ledger.now() + 3600, size)
        hashes = [_hash(f"b-{round_number}-{i}") for i in range(size)]
        records = [
            sign_submission(node.account, admin.chain_id, admin.address, round_number, update, 300 + i)
            for i, (node, update) in enumerate(zip(ledger.nodes, hashes))
        ]
        per_update[str(size)] = admin.submit_updates_by_sig(round_number, records).gas_used // size
        base = _hash(f"batch-model-{round_number}")
        root = merkle_root(bytes.fromhex(update) for update in hashes)
        admin.finalize_round(round_number, base, root, size, _hash(f"batch-meta-{round_number}"))
    return per_update


def _attestation_gas(*, ungated_first_open: int) -> dict[str, int]:
    """attestVersion, and what the quorum gate adds to opening round 1 (k = 2 here, k = 0 in the main run)."""
    from ledger.chain.inprocess import start_in_process_ledger

    gated = start_in_process_ledger(node_count=0, attestation_quorum=2)
    admin = gated.admin
    genesis = _hash("genesis")
    admin.commit_genesis(genesis, _hash("genesis-meta"))
    attest = []
    for index in range(2):
        auditor = gated.client(gated.new_account(f"bench-auditor-{index}"))
        admin.set_auditor(auditor.account.address, True)  # type: ignore[union-attr]
        attest.append(auditor.attest_version(genesis, True, _hash(f"report-{index}")).gas_used)
    gated_open = admin.open_round(1, genesis, gated.now() + 3600, 1).gas_used
    return {
        "attestVersion": int(median(attest)),
        "openRound_gated": gated_open,
        "openRound_gate_extra": gated_open - ungated_first_open,
    }


def add_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("gas", help="gas used by each contract call on the in-process chain")
    add_output_arguments(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    report = measure_gas()
    emit(report, as_json=args.json)
    return 0 if report["meets_targets"] else 1
