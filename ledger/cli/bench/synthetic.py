"""Scripted ledger histories for the index's tests and benchmarks (fake hashes, real contract calls).

- `scripted_history`: a small, varied history on any chain through `LedgerClient` (rejections, an
  abandoned round, a revoked node, metadata blobs in a store), for tests of the index and API.
- `anvil_bulk_history`: thousands of events on anvil quickly: transactions are sent as JSON-RPC
  batches from impersonated accounts, with automine off and one `evm_mine` per phase of a round.
- `moved_update`: an update blob of the real model's shape, a chosen distance from its base.

Hashes are SHA-256 of labels, not of real models: the index never needs the blobs' content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.core.merkle import merkle_root
from ledger.chain.devnet import rpc_batch, rpc_call
from ledger.core.reasons import AbandonReason, RejectReason
from ledger.core.task_spec import TaskSpec, TensorSpec

BULK_GAS = 300_000
_BULK_RPC_TIMEOUT = 60.0
FAR_FUTURE_SECONDS = 10**7


def label_hash(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


# The task the scripted histories pin at genesis: a stand-in, since their models are labels, not weights.
SYNTHETIC_TASK = TaskSpec(
    name="synthetic",
    version="1",
    code_sha256=label_hash("synthetic task code"),
    hyperparameters={},
    tensors=(TensorSpec("weight", (1,), "float32", True),),
)


# --------------------------------------------------------------------------- scripted (any chain)


@dataclass
class ScriptedHistory:
    """What `scripted_history` did, for tests to compare the index against."""

    genesis_hash: str
    versions: list[str] = field(default_factory=list)  # model hashes, genesis first
    submissions: dict[int, dict[str, str]] = field(default_factory=dict)  # round -> node -> update hash
    rejected: dict[int, dict[str, int]] = field(default_factory=dict)  # round -> node -> reason code
    abandoned: list[int] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    missing_metadata: list[str] = field(default_factory=list)  # model hashes whose blob is not stored


def scripted_history(
    chain: Any,
    store: Any | None,
    *,
    rounds: int = 4,
    label: str = "scripted",
    advance_time: Callable[[int], Any] | None = None,
) -> ScriptedHistory:
    """Genesis, then `rounds` rounds on an `InProcessLedger`-like `chain` (admin + nodes).

    Round 2 rejects one update; the round after the last is abandoned when `advance_time` can move
    past its deadline; the last node is revoked at the end; round 3's metadata blob is left out of
    the store (the index must then derive inclusion from the chain alone). At the end, one of every
    governance event: an auditor attests the first version ok and the second not ok, the admin
    resolves the failure, changes the policy, and offers and withdraws the admin role.
    """
    from ledger.core.metadata import IncludedUpdate, RejectedUpdate, encode_genesis, encode_round
    from ledger.core.policy import FederationPolicy

    admin = chain.admin
    nodes = chain.nodes
    genesis_meta = encode_genesis(seed=0, policy=FederationPolicy(rule="fedavg"), task=SYNTHETIC_TASK)
    genesis = label_hash(f"{label}/genesis")
    admin.commit_genesis(genesis, _put(store, genesis_meta))
    history = ScriptedHistory(genesis_hash=genesis, versions=[genesis])
    base = genesis
    for round_number in range(1, rounds + 1):
        deadline = chain.now() + 3600
        admin.open_round(round_number, base, deadline, 1)
        submitted: dict[str, str] = {}
        samples: dict[str, int] = {}
        for index, node in enumerate(nodes):
            update_hash = label_hash(f"{label}/round-{round_number}/node-{index}")
            samples[node.account.address] = 100 + 10 * index
            node.submit_update(round_number, update_hash, samples[node.account.address])
            submitted[node.account.address] = update_hash
        rejected: dict[str, int] = {}
        if round_number == 2 and len(nodes) > 1:
            victim = nodes[0].account.address
            admin.reject_update(round_number, victim, RejectReason.NON_FINITE)
            rejected[victim] = int(RejectReason.NON_FINITE)
        included = {n: h for n, h in submitted.items() if n not in rejected}
        metadata = encode_round(
            round_number=round_number,
            base_model_hash=base,
            task_spec=SYNTHETIC_TASK.spec_hash,
            rule="fedavg",
            rule_params={},
            included=[IncludedUpdate(h, n, samples[n]) for n, h in included.items()],
            rejected=[RejectedUpdate(submitted[n], n, code, RejectReason(code).name.lower()) for n, code in rejected.items()],
            metrics={"test_accuracy": round(0.5 + 0.1 * round_number, 6), "test_samples": 360},
        )
        model_hash = label_hash(f"{label}/model-{round_number}")
        if round_number == 3:
            metadata_hash = label_hash(metadata.decode())
            history.missing_metadata.append(model_hash)
        else:
            metadata_hash = _put(store, metadata)
        root = merkle_root(bytes.fromhex(h) for h in included.values())
        admin.finalize_round(round_number, model_hash, root, len(included), metadata_hash)
        history.versions.append(model_hash)
        history.submissions[round_number] = submitted
        history.rejected[round_number] = rejected
        base = model_hash
    if advance_time is not None:
        abandoned = rounds + 1
        admin.open_round(abandoned, base, chain.now() + 60, 1)
        advance_time(120)
        admin.abandon_round(abandoned, AbandonReason.NO_SUBMISSIONS)
        history.abandoned.append(abandoned)
    if nodes:
        admin.revoke_node(nodes[-1].account.address)
        history.revoked.append(nodes[-1].account.address)
    _governance(chain, history, label)
    return history


def _governance(chain: Any, history: ScriptedHistory, label: str) -> None:
    """Attestations, a resolution, a policy change and an admin offer (no round is open here)."""
    admin = chain.admin
    auditor = chain.client(chain.new_account(f"{label}/auditor"))
    admin.set_auditor(auditor.account.address, True)
    auditor.attest_version(history.versions[0], True, label_hash(f"{label}/report-0"))
    if len(history.versions) > 1:
        auditor.attest_version(history.versions[1], False, label_hash(f"{label}/report-1"))
        admin.resolve_attestation(history.versions[1], auditor.account.address, label_hash(f"{label}/resolution"))
    admin.set_policy(label_hash(f"{label}/policy-2"))
    admin.transfer_admin(auditor.account.address)
    admin.transfer_admin(admin.account.address)  # withdraws the offer: the admin stays


def _put(store: Any | None, blob: bytes) -> str:
    return store.put(blob) if store is not None else hashlib.sha256(blob).hexdigest()


# --------------------------------------------------------------------------- bulk (anvil)


@dataclass(frozen=True)
class BulkHistory:
    address: str
    deploy_block: int
    head_block: int
    events: int  # ledger events emitted, counted from the receipts' blocks
    node_addresses: tuple[str, ...]


def anvil_bulk_history(
    rpc_url: str,
    *,
    nodes: int = 100,
    rounds: int = 100,
    reject_every: int = 10,
    label: str = "bulk",
) -> BulkHistory:
    """Deploy a ledger on anvil and run `rounds` rounds in which each of `nodes` nodes submits.

    Every `reject_every`-th submission is rejected. About nodes × rounds × (1 + 1/reject_every)
    events; 100 × 100 gives ~11,300 in a few seconds.
    """
    from eth_utils import to_checksum_address

    from ledger.chain.calldata import encode_call as encode
    from ledger.chain.connect import connect
    from ledger.chain.client import LedgerClient
    from ledger.chain.devkeys import dev_account
    from ledger.chain.events import fetch_events

    w3 = connect(rpc_url)
    admin_account = dev_account(0)
    client, deployed = LedgerClient.deploy(w3, admin_account)
    admin = admin_account.address
    node_addresses = tuple(to_checksum_address("0x" + label_hash(f"{label}/node-{i}")[:40]) for i in range(nodes))
    nonces: dict[str, int] = {address: 0 for address in node_addresses}
    nonces[admin] = int(w3.eth.get_transaction_count(admin))

    def tx(sender: str, name: str, *args: Any) -> tuple[str, list[Any]]:
        nonce = nonces[sender]
        nonces[sender] = nonce + 1
        return (
            "eth_sendTransaction",
            [{"from": sender, "to": client.address, "data": encode(name, args), "gas": hex(BULK_GAS), "nonce": hex(nonce)}],
        )

    def mine(calls: list[tuple[str, list[Any]]]) -> None:
        rpc_batch(rpc_url, calls, timeout=_BULK_RPC_TIMEOUT)
        rpc_call(rpc_url, "evm_mine", timeout=_BULK_RPC_TIMEOUT)

    rpc_call(rpc_url, "anvil_autoImpersonateAccount", [True], timeout=_BULK_RPC_TIMEOUT)
    rpc_batch(rpc_url, timeout=_BULK_RPC_TIMEOUT, calls=[("anvil_setBalance", [address, hex(10**21)]) for address in node_addresses])
    rpc_call(rpc_url, "evm_setAutomine", [False], timeout=_BULK_RPC_TIMEOUT)
    try:
        deadline = int(w3.eth.get_block("latest")["timestamp"]) + FAR_FUTURE_SECONDS
        genesis = bytes.fromhex(label_hash(f"{label}/genesis"))
        mine(
            [tx(admin, "registerNode", address) for address in node_addresses]
            + [tx(admin, "commitGenesis", genesis, bytes.fromhex(label_hash(f"{label}/genesis-meta")))]
            + [tx(admin, "openRound", 1, genesis, deadline, 1)]
        )
        for round_number in range(1, rounds + 1):
            hashes = {
                address: bytes.fromhex(label_hash(f"{label}/r{round_number}/n{i}"))
                for i, address in enumerate(node_addresses)
            }
            mine([tx(address, "submitUpdate", round_number, h, 100 + i) for i, (address, h) in enumerate(hashes.items())])
            rejected = [a for i, a in enumerate(node_addresses) if reject_every and (i + round_number) % reject_every == 0]
            included = [h for a, h in hashes.items() if a not in rejected]
            model = bytes.fromhex(label_hash(f"{label}/model-{round_number}"))
            closing = [tx(admin, "rejectUpdate", round_number, a, int(RejectReason.NORM_TOO_LARGE)) for a in rejected]
            closing.append(
                tx(
                    admin,
                    "finalizeRound",
                    round_number,
                    model,
                    merkle_root(included),
                    len(included),
                    bytes.fromhex(label_hash(f"{label}/meta-{round_number}")),
                )
            )
            if round_number < rounds:
                closing.append(tx(admin, "openRound", round_number + 1, model, deadline, 1))
            mine(closing)
    finally:
        rpc_call(rpc_url, "evm_setAutomine", [True], timeout=_BULK_RPC_TIMEOUT)
        rpc_call(rpc_url, "anvil_autoImpersonateAccount", [False], timeout=_BULK_RPC_TIMEOUT)
    head = int(w3.eth.block_number)
    events = fetch_events(w3, client.address, deployed.block_number, head)
    return BulkHistory(
        address=client.address,
        deploy_block=deployed.block_number,
        head_block=head,
        events=len(events),
        node_addresses=node_addresses,
    )


# --------------------------------------------------------------------------- straight into SQL


def sql_linear_history(sessions: Any, *, versions: int = 1000, updates_per_version: int = 5, nodes: int = 20) -> str:
    """Rows for a linear lineage of `versions` versions (genesis + one per round), written directly
    into the index tables with no chain behind them (for the API benchmark); returns the tip's hash.

    Each round has `updates_per_version` included submissions from rotating nodes, with a real
    Merkle root over them, so lineage and proof endpoints do their full work.
    """
    from eth_utils import to_checksum_address
    from sqlalchemy import insert

    from ledger.index.db import transaction
    from ledger.index.models import IndexerCursor, ModelVersion, Node, Round, RoundStatus, Submission

    node_addresses = [to_checksum_address("0x" + label_hash(f"sql/node-{i}")[:40]) for i in range(nodes)]
    model_hashes = [label_hash(f"sql/model-{v}") for v in range(versions)]
    node_rows = [{"address": a, "active": True, "registered_block": 1, "revoked_block": None} for a in node_addresses]
    version_rows, round_rows, update_rows = [], [], []
    for v, model_hash in enumerate(model_hashes):
        block = 10 + 3 * v
        if v == 0:
            version_rows.append(_sql_version(v, model_hash, None, None, 0, block))
            continue
        hashes = [label_hash(f"sql/r{v}/u{i}") for i in range(updates_per_version)]
        root = merkle_root(bytes.fromhex(h) for h in hashes).hex()
        version_rows.append(_sql_version(v, model_hash, model_hashes[v - 1], root, len(hashes), block))
        round_rows.append(
            {
                "round": v,
                "base_model_hash": model_hashes[v - 1],
                "deadline": 2_000_000_000,
                "min_updates": 1,
                "state": RoundStatus.FINALIZED,
                "opened_block": block - 2,
                "opened_tx": label_hash(f"sql/open-{v}"),
                "closed_block": block,
                "abandon_reason": None,
            }
        )
        for i, update_hash in enumerate(hashes):
            update_rows.append(
                {
                    "round": v,
                    "node": node_addresses[(v + i) % nodes],
                    "update_hash": update_hash,
                    "num_samples": 100 + i,
                    "block_number": block - 1,
                    "tx_hash": label_hash(f"sql/tx-{v}-{i}"),
                    "log_index": i,
                    "rejected_reason": None,
                    "rejected_block": None,
                    "included": True,
                }
            )
    with transaction(sessions) as session:
        session.execute(insert(Node), node_rows)
        session.execute(insert(Round), round_rows)
        session.execute(insert(Submission), update_rows)
        session.execute(insert(ModelVersion), version_rows)
        session.add(
            IndexerCursor(
                id=1,
                chain_id=0,
                contract_address="0x" + "00" * 20,
                start_block=0,
                last_block=10 + 3 * versions,
                last_block_hash=label_hash("sql/head"),
            )
        )
    return model_hashes[-1]


def _sql_version(v: int, model_hash: str, parent: str | None, root: str | None, count: int, block: int) -> dict[str, Any]:
    return {
        "version": v,
        "model_hash": model_hash,
        "parent_hash": parent,
        "round": v,
        "depth": v,
        "included_root": root,
        "included_count": count,
        "metadata_hash": label_hash(f"sql/meta-{v}"),
        "metadata_loaded": True,
        "rule_name": "fedavg" if v else None,
        "rule_params": {} if v else None,
        "metrics": {"test_accuracy": round(0.5 + v / (2 * 1000), 6)} if v else None,
        "block_number": block,
        "tx_hash": label_hash(f"sql/commit-{v}"),
        "log_index": 0,
    }


# --------------------------------------------------------------------------- crafted updates


def moved_update(base: Any, *, seed: int, norm: float) -> bytes:
    """`base` (name → tensor) plus a random change of L2 norm `norm`, serialized canonically: an
    update of the real model's shape with no training behind it (for auditors' tests and benches)."""
    import math

    import torch

    from ledger.core.serialization import serialize_tensors

    generator = torch.Generator().manual_seed(seed)
    change = {name: torch.randn(tensor.shape, generator=generator) for name, tensor in base.items()}
    scale = norm / math.sqrt(sum(float((c.double() ** 2).sum()) for c in change.values()))
    return serialize_tensors({name: base[name] + scale * change[name] for name in base})
