"""Relaying nodes' signed submissions: check each record off-chain, post the good ones in batches.

Any account may relay (the aggregator, a node, anyone with gas). The contract reverts a whole
batch on one bad record, so every record is checked first as the contract would: it recovers a
registered node, for this round, chain and contract, with a canonical signature. Records of nodes
whose submission is already on chain are left out (the contract would skip them anyway).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ledger.chain.client import LedgerClient, TxResult, recover_submission

log = logging.getLogger(__name__)

BATCH_SIZE = 100  # ~30k gas per update at 100 (bench gas): ~3M gas per transaction


def relay_records(client: LedgerClient, round_number: int, records: Mapping[str, bytes], *, batch_size: int = BATCH_SIZE) -> list[TxResult]:
    """Post the valid, not yet submitted records of `round_number`, `batch_size` per transaction."""
    good: list[bytes] = []
    signers: set[str] = set()
    for claimed, record in records.items():
        try:
            signer, _, _ = recover_submission(client.chain_id, client.address, round_number, record)
        except ValueError as exc:
            log.warning("round %d: dropping the record of %s: %s", round_number, claimed, exc)
            continue
        if not client.is_node(signer):
            log.warning("round %d: dropping a record signed by %s, not a registered node", round_number, signer)
            continue
        if signer not in signers and client.submission_of(round_number, signer) is None:
            signers.add(signer)
            good.append(record)
    return [client.submit_updates_by_sig(round_number, good[i : i + batch_size]) for i in range(0, len(good), batch_size)]
