"""`fedledger bench gas`: gas per contract call, measured on the in-process py-evm chain.

Finalize is measured after real rounds in which 1, 10 and 100 nodes submitted, with the real
Merkle root of their hashes, to show its cost does not grow with the number of updates.
Attestations: attestVersion (the first and the second auditor on a version), and openRound on a
ledger with a quorum of 2 against the same rounds on one without, to show what the gate costs.
"""

from __future__ import annotations

import argparse
import hashlib
from typing import Any

from ledger.cli.bench.common import add_output_arguments, emit, median

SUBMIT_TARGET = 55_000
FINALIZE_TARGET = 90_000
FINALIZE_SPREAD_TARGET = 0.01
ATTEST_TARGET = 50_000
GATE_EXTRA_TARGET = 5_000
INCLUDED_COUNTS = (1, 10, 100)
GATED_ROUNDS = 5


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
    gas.update(_attestation_gas())
    gas["submitUpdate_first"] = int(median(submit_first))
    gas["submitUpdate_later"] = int(median(submit_later))
    gas["finalizeRound"] = finalize
    finalize_values = list(finalize.values())
    spread = (max(finalize_values) - min(finalize_values)) / min(finalize_values)
    submit_max = max(gas["submitUpdate_first"], gas["submitUpdate_later"])
    gate_extra = gas["openRound_gated"] - gas["openRound_ungated"]
    return {
        "benchmark": "gas",
        "chain": "in-process py-evm (web3 EthereumTesterProvider)",
        "gas": gas,
        "finalize_spread": round(spread, 5),
        "openRound_gate_extra": gate_extra,
        "targets": {
            "submitUpdate_max": SUBMIT_TARGET,
            "finalizeRound_max": FINALIZE_TARGET,
            "finalize_spread_max": FINALIZE_SPREAD_TARGET,
            "attestVersion_max": ATTEST_TARGET,
            "openRound_gate_extra_max": GATE_EXTRA_TARGET,
        },
        "meets_targets": submit_max <= SUBMIT_TARGET
        and max(finalize_values) <= FINALIZE_TARGET
        and spread <= FINALIZE_SPREAD_TARGET
        and max(gas["attestVersion_first"], gas["attestVersion_later"]) <= ATTEST_TARGET
        and gate_extra <= GATE_EXTRA_TARGET,
    }


def _attestation_gas() -> dict[str, int]:
    """attestVersion, and openRound with the quorum gate on (quorum 2) against the same rounds without.

    Two ledgers run the same history side by side: genesis, then `GATED_ROUNDS` rounds each opened
    on the latest version, one update each; on the gated one, two auditors attest every version
    before the next round opens on it. The gate's cost is the median difference of openRound.
    """
    from ledger.chain.inprocess import start_in_process_ledger
    from ledger.core.merkle import merkle_root

    plain = start_in_process_ledger(node_count=1)
    gated = start_in_process_ledger(node_count=1, attestation_quorum=2)
    auditors = [gated.client(gated.new_account(f"bench-auditor-{i}")) for i in range(2)]
    for auditor in auditors:
        gated.admin.set_auditor(auditor.account.address, True)  # type: ignore[union-attr]
    opened: dict[str, list[int]] = {"plain": [], "gated": []}
    first: list[int] = []
    later: list[int] = []
    for name, ledger in (("plain", plain), ("gated", gated)):
        base = _hash("genesis")
        ledger.admin.commit_genesis(base, _hash("genesis-meta"))
        for round_number in range(1, GATED_ROUNDS + 1):
            if name == "gated":
                first.append(auditors[0].attest_version(base, True, _hash(f"report-0-{round_number}")).gas_used)
                later.append(auditors[1].attest_version(base, True, _hash(f"report-1-{round_number}")).gas_used)
            opened[name].append(ledger.admin.open_round(round_number, base, ledger.now() + 3600, 1).gas_used)
            update = _hash(f"update-{round_number}")
            ledger.nodes[0].submit_update(round_number, update, 100)
            model = _hash(f"model-{round_number}")
            ledger.admin.finalize_round(round_number, model, merkle_root([bytes.fromhex(update)]), 1, _hash(f"meta-{round_number}"))
            base = model
    return {
        "attestVersion_first": int(median(first)),
        "attestVersion_later": int(median(later)),
        "openRound_ungated": int(median(opened["plain"])),
        "openRound_gated": int(median(opened["gated"])),
    }


def add_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("gas", help="gas used by each contract call on the in-process chain")
    add_output_arguments(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    report = measure_gas()
    emit(report, as_json=args.json)
    return 0 if report["meets_targets"] else 1
