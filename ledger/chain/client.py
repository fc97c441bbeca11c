"""Typed client for the FederatedLedger contract: methods mirror the contract, failures raise
the project's own exceptions (see ledger.chain.errors), reads return dataclasses.

Every write is estimated first (so a revert surfaces as e.g. `AlreadySubmitted(round=3, node=0x…)`
before any gas is spent), signed locally with the caller's key and awaited to its receipt.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar, cast

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import TransactionNotFound, Web3RPCError
from web3.providers import JSONBaseProvider
from web3.types import BlockIdentifier, RPCEndpoint, TxParams

from ledger.core import hashing
from ledger.chain import calldata
from ledger.chain.artifact import load_artifact
from ledger.chain.errors import LedgerError, TransactionReverted, decode_revert, revert_data_from
from ledger.chain.events import LedgerEvent, fetch_events
from ledger.chain.keys import guard_dev_key, is_in_process_chain
from ledger.chain.tester import SerializedTesterProvider

log = logging.getLogger(__name__)

MANY_GAS_HEADROOM = 4  # calls after the first of a batch get its estimate + 1/4

E = TypeVar("E", bound=LedgerEvent)

HashLike = str | bytes


class RoundState(IntEnum):
    NONE = 0
    OPEN = 1
    FINALIZED = 2
    ABANDONED = 3


@dataclass(frozen=True)
class TxResult:
    """What a write cost and where it landed."""

    function: str
    tx_hash: str
    block_number: int
    gas_used: int
    events: tuple[LedgerEvent, ...]


@dataclass(frozen=True)
class RoundInfo:
    round: int
    base_model_hash: str | None
    deadline: int
    min_updates: int
    state: RoundState


@dataclass(frozen=True)
class ModelInfo:
    model_hash: str
    version: int
    round: int
    included_count: int


@dataclass(frozen=True)
class Counters:
    last_round: int
    version_count: int


@dataclass(frozen=True)
class AttestationCounts:
    """A version's attestations: `current_ok` (ok votes of current auditors) is what the gate counts."""

    ok: int
    current_ok: int
    failed: int
    unresolved: int

    def opens_rounds(self, quorum: int) -> bool:
        """Whether `openRound` may build on the version under an attestation quorum `quorum`."""
        return quorum == 0 or (self.current_ok >= quorum and self.unresolved == 0)


@dataclass(frozen=True)
class Attestation:
    attested: bool
    ok: bool
    resolved: bool


def to_bytes32(value: HashLike) -> bytes:
    """Accept a hash as 32 raw bytes or as digest text (see ledger.core.hashing)."""
    if isinstance(value, (bytes, bytearray)):
        return hashing.to_bytes32(bytes(value).hex())
    return hashing.to_bytes32(value)


def _hash_or_none(raw: bytes) -> str | None:
    return None if raw == bytes(32) else bytes(raw).hex()


class LedgerClient:
    """One account's view of one deployed ledger."""

    def __init__(
        self,
        w3: Web3,
        address: str,
        account: LocalAccount | None = None,
        *,
        receipt_timeout: float = 120.0,
    ) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.account = account
        self.receipt_timeout = receipt_timeout
        self.chain_id = int(w3.eth.chain_id)
        if account is not None:
            guard_dev_key(w3, account.address, self.chain_id)
        self.contract: Contract = w3.eth.contract(address=self.address, abi=load_artifact().abi)
        # Calls and transactions are encoded from the ABI and sent as plain JSON-RPC requests (anvil,
        # geth, an L2) or handed to eth-tester (the in-process chain); web3's contract machinery
        # serves any other provider.
        self._json_rpc = isinstance(w3.provider, JSONBaseProvider)
        self._tester = w3.provider if isinstance(w3.provider, SerializedTesterProvider) else None

    @classmethod
    def deploy(
        cls, w3: Web3, account: LocalAccount, *, attestation_quorum: int = 0, **kwargs: Any
    ) -> tuple[LedgerClient, TxResult]:
        """Deploy a fresh ledger from the packaged artifact; the deployer is admin and aggregator.

        `attestation_quorum` k > 0 makes `openRound` require k ok auditor attestations of its base.
        """
        guard_dev_key(w3, account.address, int(w3.eth.chain_id))
        artifact = load_artifact()
        factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        constructor = factory.constructor(attestation_quorum)
        receipt, tx_hash = _send(w3, account, constructor, "deploy", kwargs.get("receipt_timeout", 120.0))
        address = receipt["contractAddress"]
        if not w3.eth.get_code(address):
            raise LedgerError(f"deployment transaction {tx_hash} left no code at {address}")
        client = cls(w3, address, account, **kwargs)
        return client, client._result("deploy", tx_hash, receipt)

    def as_account(self, account: LocalAccount) -> LedgerClient:
        """The same ledger, signing as another account (sharing this client's connection and its
        contract object, whose ABI handling costs ~10 ms to build)."""
        guard_dev_key(self.w3, account.address, self.chain_id)
        other = copy.copy(self)
        other.account = account
        return other

    # ---------------------------------------------------------------- writes

    def transfer_admin(self, new_admin: str) -> TxResult:
        """Offer the admin role to `new_admin`; it moves only when they call `accept_admin`."""
        return self._transact("transferAdmin", to_checksum_address(new_admin))

    def accept_admin(self) -> TxResult:
        return self._transact("acceptAdmin")

    def set_auditor(self, account: str, enabled: bool) -> TxResult:
        return self._transact("setAuditor", to_checksum_address(account), enabled)

    def attest_version(
        self, model_hash: HashLike, ok: bool, report_hash: HashLike, *, on_sent: Callable[[str], None] | None = None
    ) -> TxResult:
        """`on_sent(tx_hash)` runs once the transaction is sent, before its receipt is awaited."""
        return self._transact("attestVersion", to_bytes32(model_hash), ok, to_bytes32(report_hash), on_sent=on_sent)

    def resolve_attestation(self, model_hash: HashLike, auditor: str, resolution_hash: HashLike) -> TxResult:
        return self._transact(
            "resolveAttestation", to_bytes32(model_hash), to_checksum_address(auditor), to_bytes32(resolution_hash)
        )

    def set_policy(self, policy_hash: HashLike) -> TxResult:
        """Pin a new policy blob for the rounds from the next one on (admin, no round open)."""
        return self._transact("setPolicy", to_bytes32(policy_hash))

    def set_aggregator(self, account: str, enabled: bool) -> TxResult:
        return self._transact("setAggregator", to_checksum_address(account), enabled)

    def register_node(self, node: str) -> TxResult:
        return self._transact("registerNode", to_checksum_address(node))

    def revoke_node(self, node: str) -> TxResult:
        return self._transact("revokeNode", to_checksum_address(node))

    def commit_genesis(self, model_hash: HashLike, metadata_hash: HashLike) -> TxResult:
        return self._transact("commitGenesis", to_bytes32(model_hash), to_bytes32(metadata_hash))

    def open_round(self, round: int, base_model_hash: HashLike, deadline: int, min_updates: int) -> TxResult:
        return self._transact("openRound", round, to_bytes32(base_model_hash), deadline, min_updates)

    def submit_update(self, round: int, update_hash: HashLike, num_samples: int) -> TxResult:
        return self.send(self.prepare_submission(round, update_hash, num_samples))

    def prepare_submission(self, round: int, update_hash: HashLike, num_samples: int) -> PreparedTx:
        """`submitUpdate`, simulated against the pending block and signed, ready for `send`."""
        return self.prepare("submitUpdate", round, to_bytes32(update_hash), num_samples)

    def submit_updates_by_sig(self, round: int, records: Sequence[bytes]) -> TxResult:
        """Relay nodes' signed submissions (`sign_submission` records) in one transaction.

        A node that already submitted is skipped; any other bad record reverts the whole batch,
        naming its index (`InvalidSignature`, `SignerNotNode`).
        """
        return self._transact("submitUpdatesBySig", round, b"".join(records))

    def reject_update(self, round: int, node: str, reason_code: int) -> TxResult:
        return self._transact("rejectUpdate", round, to_checksum_address(node), int(reason_code))

    def reject_updates(self, round: int, rejections: Sequence[tuple[str, int]]) -> list[TxResult]:
        """`reject_update` for each (node, reason code), sent back to back and then awaited: one
        round trip to a receipt for all of them instead of one each."""
        calls = [("rejectUpdate", (round, to_checksum_address(node), int(code))) for node, code in rejections]
        return self._transact_many(calls)

    def finalize_round(
        self,
        round: int,
        model_hash: HashLike,
        included_root: HashLike,
        included_count: int,
        metadata_hash: HashLike,
    ) -> TxResult:
        return self._transact(
            "finalizeRound",
            round,
            to_bytes32(model_hash),
            to_bytes32(included_root),
            included_count,
            to_bytes32(metadata_hash),
        )

    def abandon_round(self, round: int, reason_code: int) -> TxResult:
        return self._transact("abandonRound", round, int(reason_code))

    # ---------------------------------------------------------------- reads

    def admin(self) -> str:
        return to_checksum_address(self._call("admin"))

    def is_node(self, account: str, *, block: BlockIdentifier = "latest") -> bool:
        return bool(self._call("isNode", to_checksum_address(account), block=block))

    def is_aggregator(self, account: str, *, block: BlockIdentifier = "latest") -> bool:
        return bool(self._call("isAggregator", to_checksum_address(account), block=block))

    def is_auditor(self, account: str, *, block: BlockIdentifier = "latest") -> bool:
        return bool(self._call("isAuditor", to_checksum_address(account), block=block))

    def pending_admin(self) -> str | None:
        pending = to_checksum_address(self._call("pendingAdmin"))
        return None if int(pending, 16) == 0 else pending

    def attestation_quorum(self) -> int:
        return int(self._call("attestationQuorum"))

    def attestation_counts(self, model_hash: HashLike) -> AttestationCounts:
        ok, current_ok, failed, unresolved = self._call("attestationCounts", to_bytes32(model_hash))
        return AttestationCounts(ok=int(ok), current_ok=int(current_ok), failed=int(failed), unresolved=int(unresolved))

    def attestation_of(self, model_hash: HashLike, auditor: str) -> Attestation:
        attested, ok, resolved = self._call("attestationOf", to_bytes32(model_hash), to_checksum_address(auditor))
        return Attestation(attested=bool(attested), ok=bool(ok), resolved=bool(resolved))

    def hash_submission(self, round: int, update_hash: HashLike, num_samples: int) -> bytes:
        """The EIP-712 digest the contract expects a node to sign for this submission."""
        return bytes(self._call("hashSubmission", round, to_bytes32(update_hash), num_samples))

    def genesis_hash(self) -> str | None:
        return _hash_or_none(self._call("genesisHash"))

    def counters(self, *, block: BlockIdentifier = "latest") -> Counters:
        last_round, version_count = self._call("counters", block=block)
        return Counters(last_round=int(last_round), version_count=int(version_count))

    def get_round(self, round: int) -> RoundInfo:
        base, deadline, min_updates, state = self._call("getRound", round)
        return RoundInfo(
            round=round,
            base_model_hash=_hash_or_none(base),
            deadline=int(deadline),
            min_updates=int(min_updates),
            state=RoundState(state),
        )

    def submission_of(self, round: int, node: str) -> str | None:
        return _hash_or_none(self._call("submissionOf", round, to_checksum_address(node)))

    def rejection_of(self, round: int, node: str) -> int:
        return int(self._call("rejectionOf", round, to_checksum_address(node)))

    def model_of(self, model_hash: HashLike) -> ModelInfo | None:
        committed, version, round, included_count = self._call("modelOf", to_bytes32(model_hash))
        if not committed:
            return None
        return ModelInfo(
            model_hash=to_bytes32(model_hash).hex(),
            version=int(version),
            round=int(round),
            included_count=int(included_count),
        )

    def verify_inclusion(self, root: HashLike, update_hash: HashLike, proof: Sequence[HashLike]) -> bool:
        return bool(
            self._call("verifyInclusion", to_bytes32(root), to_bytes32(update_hash), [to_bytes32(p) for p in proof])
        )

    # ---------------------------------------------------------------- events

    def events(
        self,
        from_block: int = 0,
        to_block: int | str = "latest",
        *,
        event_type: type[E] | None = None,
        topic_filters: list[Any] | None = None,
    ) -> list[Any]:
        """Ledger events in chain order, optionally one type and indexed-topic filters."""
        names = [event_type.event_name] if event_type is not None else None
        return fetch_events(
            self.w3, self.address, from_block, to_block, event_names=names, topic_filters=topic_filters
        )

    # ---------------------------------------------------------------- plumbing

    def _call(self, name: str, *args: Any, block: BlockIdentifier = "latest") -> Any:
        """A view function's answer at `block` (a number, a hash, or "latest")."""
        if self._json_rpc and isinstance(block, (int, str)) and not isinstance(block, bool):
            function = calldata.functions()[name]
            at = hex(block) if isinstance(block, int) else block
            call = {"to": self.address, "data": "0x" + function.encode(args).hex()}
            return function.decode(_answer(self.w3.provider.make_request(RPCEndpoint("eth_call"), [call, at]), name))
        if self._tester is not None:
            function = calldata.functions()[name]
            return function.decode(self._tester.call(None, self.address, "0x" + function.encode(args).hex(), block))
        try:
            return getattr(self.contract.functions, name)(*args).call(block_identifier=block)
        except LedgerError:
            raise
        except Exception as exc:  # providers raise many types; decode what we can
            data = revert_data_from(exc)
            if data is None:
                raise
            raise decode_revert(data) from exc

    def prepare(self, name: str, *args: Any) -> PreparedTx:
        """Simulate and sign a call to contract function `name`, without sending it.

        A revert surfaces here, as its typed error. Splitting this from `send` lets a caller do it
        while other work runs (an edge node prepares its submission while its upload is in flight).
        """
        if self.account is None:
            raise LedgerError(f"{name} needs a signing account; this client is read-only")
        if self._json_rpc:
            return _prepare_json_rpc(self.w3, self.chain_id, self.account, self.address, name, args)
        if self._tester is not None:
            return _prepare_in_process(self._tester, self.w3, self.chain_id, self.account, self.address, name, args)
        return _prepare(self.w3, self.account, getattr(self.contract.functions, name)(*args), name)

    def send(self, prepared: PreparedTx, *, on_sent: Callable[[str], None] | None = None) -> TxResult:
        """Send a prepared transaction and await its receipt; a mined revert raises its typed error.

        `on_sent(tx_hash)` runs once the transaction is sent, before its receipt is awaited.
        """
        _broadcast(self.w3, prepared.raw, prepared.tx_hash)
        if on_sent is not None:
            on_sent(prepared.tx_hash[2:])
        receipt = _settle(self.w3, prepared, self.receipt_timeout)
        return self._result(prepared.function, prepared.tx_hash[2:], receipt)

    def _transact(self, name: str, *args: Any, on_sent: Callable[[str], None] | None = None) -> TxResult:
        return self.send(self.prepare(name, *args), on_sent=on_sent)

    def _transact_many(self, calls: Sequence[tuple[str, tuple[Any, ...]]]) -> list[TxResult]:
        """Independent calls of one function without a round trip to a receipt between them.

        The first is simulated (a revert surfaces as its typed error before anything is sent); the
        others take its gas with headroom, its fees and the next nonces. All are sent, then the
        receipts awaited in order: one that reverted anyway is replayed into its typed error.
        """
        if not calls:
            return []
        if len({name for name, _ in calls}) != 1:
            raise ValueError("_transact_many sends calls of one function (their gas is estimated once)")
        first = self.prepare(calls[0][0], *calls[0][1])
        assert self.account is not None  # `prepare` refused a read-only client
        prepared = [first] + [
            _prepare(self.w3, self.account, getattr(self.contract.functions, name)(*args), name, after=first, offset=offset)
            for offset, (name, args) in enumerate(calls[1:], start=1)
        ]
        for tx in prepared:
            _broadcast(self.w3, tx.raw, tx.tx_hash)
        return [self._result(tx.function, tx.tx_hash[2:], _settle(self.w3, tx, self.receipt_timeout)) for tx in prepared]

    def _result(self, name: str, tx_hash: str, receipt: Any) -> TxResult:
        from ledger.chain.events import decode_logs

        block = int(receipt["blockNumber"])
        if self._tester is not None and int(receipt["transactionIndex"]) > 0:
            # eth-tester's receipts number logs within their transaction, reads (as any node) within the block
            mined = self._tester.logs(self.address, block, block, [])
            ours = [entry for entry in mined if entry["transactionHash"].hex() == tx_hash.removeprefix("0x")]
        else:
            ours = [entry for entry in receipt["logs"] if to_checksum_address(entry["address"]) == self.address]
        result = TxResult(
            function=name,
            tx_hash=tx_hash,
            block_number=block,
            gas_used=int(receipt["gasUsed"]),
            events=tuple(decode_logs(self.w3, ours)),
        )
        log.debug("%s mined in block %d, gas %d, tx %s", name, result.block_number, result.gas_used, tx_hash)
        return result


@dataclass(frozen=True)
class PreparedTx:
    """A simulated, signed transaction: the same bytes are sent again if a chain loses them."""

    function: str
    tx: dict[str, Any]
    raw: bytes
    tx_hash: str  # 0x-prefixed


def _send(w3: Web3, account: LocalAccount, function: Any, name: str, timeout: float) -> tuple[Any, str]:
    """Prepare (simulate, sign), send, await the receipt: `_prepare` then `_submit`."""
    prepared = _prepare(w3, account, function, name)
    return _submit(w3, prepared, timeout), prepared.tx_hash[2:]


def _prepare(
    w3: Web3, account: LocalAccount, function: Any, name: str, *, after: PreparedTx | None = None, offset: int = 0
) -> PreparedTx:
    """Simulate (surfacing reverts as typed errors) and sign locally.

    The simulation runs against the pending block, the one the transaction would land in, so a
    deadline judged there is the deadline the contract applies. The fee comes from that same
    pending block's base fee (twice it, plus the tip), so no further reads are needed. With
    `after` (a prepared call of the same function) nothing is simulated: the transaction takes its
    fees, its gas with headroom and its nonce + `offset`, to be sent right behind it.
    """
    if after is not None:
        gas = int(after.tx["gas"]) + int(after.tx["gas"]) // MANY_GAS_HEADROOM
        behind: dict[str, Any] = {"from": account.address, "nonce": int(after.tx["nonce"]) + offset, "gas": gas}
        behind.update({key: after.tx[key] for key in ("maxFeePerGas", "maxPriorityFeePerGas", "gasPrice") if key in after.tx})
        tx = function.build_transaction(behind)
        return _signed(account, name, tx)
    params: dict[str, Any] = {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address, "pending")}
    try:
        if is_in_process_chain(w3):
            # py-evm estimates by binary search (a dozen executions) and only at its latest block;
            # for a contract call, one execution surfaces any revert.
            if hasattr(function, "call"):
                function.call(params)
                gas = IN_PROCESS_GAS
            else:  # the deployment
                gas = function.estimate_gas(params)
        else:
            gas = function.estimate_gas(params, block_identifier="pending")
            params.update(_fees(w3, "pending"))
        tx = function.build_transaction({**params, "gas": gas})
    except LedgerError:
        raise
    except Exception as exc:
        data = revert_data_from(exc)
        if data is None:
            raise
        raise decode_revert(data) from exc
    return _signed(account, name, tx)


def _prepare_json_rpc(w3: Web3, chain_id: int, account: LocalAccount, address: str, name: str, args: Sequence[Any]) -> PreparedTx:
    """`_prepare` over JSON-RPC in one batch request: the nonce, the gas (a simulation against the
    pending block, surfacing a revert as its typed error) and that block's base fee."""
    data = calldata.encode_call(name, args)
    call = {"from": account.address, "to": address, "data": data}
    tip = _tip(w3, chain_id)
    provider = cast(JSONBaseProvider, w3.provider)
    answers = provider.make_batch_request(
        [
            (RPCEndpoint("eth_getTransactionCount"), [account.address, "pending"]),
            (RPCEndpoint("eth_estimateGas"), [call, "pending"]),
            (RPCEndpoint("eth_getBlockByNumber"), ["pending", False]),
        ]
    )
    if not isinstance(answers, list) or len(answers) != 3:  # an endpoint refusing the batch as a whole
        raise LedgerError(f"{name}: the chain refused the batch request: {answers}")
    nonce, gas, block = (_answer(answer, name) for answer in answers)
    base_fee = int((block or {}).get("baseFeePerGas") or "0x0", 16)
    tx = {
        "type": 2, "chainId": chain_id, "from": account.address, "to": address, "data": data, "value": 0,
        "nonce": int(nonce, 16), "gas": int(gas, 16), "maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * base_fee + tip,
    }  # fmt: skip
    return _signed(account, name, tx)


def _prepare_in_process(
    tester: SerializedTesterProvider, w3: Web3, chain_id: int, account: LocalAccount, address: str, name: str, args: Sequence[Any]
) -> PreparedTx:
    """`_prepare` on the in-process chain: one execution at the latest block surfaces a revert as
    its typed error (py-evm's gas estimate is a binary search of a dozen executions); the gas is
    `IN_PROCESS_GAS`, the fees those of the pending block."""
    data = calldata.encode_call(name, args)
    nonce = tester.pending_nonce(account.address)
    tester.call(account.address, address, data, "latest")
    tip = _tip(w3, chain_id)
    tx = {
        "type": 2, "chainId": chain_id, "from": account.address, "to": address, "data": data, "value": 0,
        "nonce": nonce, "gas": IN_PROCESS_GAS, "maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * tester.pending_base_fee() + tip,
    }  # fmt: skip
    return _signed(account, name, tx)


def _answer(response: Any, name: str) -> Any:
    """A JSON-RPC answer's result; a revert as its typed error, any other error as it came."""
    error = response.get("error") if isinstance(response, dict) else None
    if error is None:
        return response["result"]
    data = revert_data_from(Web3RPCError(str(error), rpc_response=response))
    if data is not None:
        raise decode_revert(data)
    raise Web3RPCError(f"{name}: {error.get('message', error) if isinstance(error, dict) else error}", rpc_response=response)


def _signed(account: LocalAccount, name: str, tx: Any) -> PreparedTx:
    signed = account.sign_transaction(tx)
    return PreparedTx(function=name, tx=dict(tx), raw=bytes(signed.raw_transaction), tx_hash="0x" + bytes(signed.hash).hex())


def _submit(w3: Web3, prepared: PreparedTx, timeout: float) -> Any:
    """Broadcast the signed bytes and await the receipt (re-sending them if the chain lost them)."""
    _broadcast(w3, prepared.raw, prepared.tx_hash)
    return _settle(w3, prepared, timeout)


def _settle(w3: Web3, prepared: PreparedTx, timeout: float) -> Any:
    """The receipt of a broadcast transaction; a mined revert raises its typed error."""
    receipt = _await_receipt(w3, prepared.raw, prepared.tx_hash, prepared.function, timeout)
    if receipt["status"] != 1:
        raise _replay_failure(w3, prepared.tx, receipt, prepared.function)
    return receipt


# Gas for any ledger call on the in-process chain, where nothing is paid for: above the costliest
# (finalizeRound, ~65k) with room to spare, far below the block's limit.
IN_PROCESS_GAS = 1_000_000
_TIP_WEI: dict[int, int] = {}  # per chain id: the priority fee the node suggested once


def _tip(w3: Web3, chain_id: int) -> int:
    """The priority fee for chain `chain_id`, asked of its node once."""
    tip = _TIP_WEI.get(chain_id)
    if tip is None:
        tip = _TIP_WEI[chain_id] = int(w3.eth.max_priority_fee)
    return tip


def _fees(w3: Web3, block: str) -> dict[str, int]:
    """EIP-1559 fees for a transaction landing in `block`: the tip asked once per chain, 2 × base fee + tip."""
    chain_id = int(w3.eth.chain_id)
    tip = _tip(w3, chain_id)
    base_fee = int(w3.eth.get_block(block).get("baseFeePerGas") or 0)  # type: ignore[arg-type]
    return {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * base_fee + tip}


_RESEND_SECONDS = 2.0


def _broadcast(w3: Web3, raw: bytes, tx_hash: str) -> None:
    """Send signed bytes; "already known" or "nonce too low" for this very transaction is success."""
    try:
        w3.eth.send_raw_transaction(raw)
    except Exception as exc:
        text = str(exc).lower()
        if ("already" in text or "nonce too low" in text or "known" in text) and _known(w3, tx_hash):
            return
        raise


def _known(w3: Web3, tx_hash: str) -> bool:
    try:
        w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
        return True
    except TransactionNotFound:
        return False


def _await_receipt(w3: Web3, raw: bytes, tx_hash: str, name: str, timeout: float) -> Any:
    """The receipt, re-sending the transaction if the chain no longer knows it (lost in a restart)."""
    deadline = time.monotonic() + timeout
    checked = time.monotonic()
    while True:
        try:
            return w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            pass
        now = time.monotonic()
        if now - checked >= _RESEND_SECONDS:
            checked = now
            if not _known(w3, tx_hash):
                log.info("%s transaction %s is unknown to the chain (restarted?): sending it again", name, tx_hash)
                _broadcast(w3, raw, tx_hash)
        if now > deadline:
            raise LedgerError(f"{name}: no receipt for transaction {tx_hash} within {timeout:.0f} s")
        time.sleep(_RECEIPT_POLL_SECONDS)


_RECEIPT_POLL_SECONDS = 0.05


def _replay_failure(w3: Web3, tx: dict[str, Any], receipt: Any, name: str) -> LedgerError:
    """A mined revert (state or time moved between simulation and inclusion): replay it to learn why.

    Replayed at the block it was mined in, so the replay sees that block's timestamp (a deadline
    that passed between simulation and inclusion decodes as `DeadlinePassed`).
    """
    call = {key: tx[key] for key in ("from", "to", "data", "value") if key in tx}
    block = int(receipt["blockNumber"])
    for at in (block, block - 1):
        try:
            w3.eth.call(cast(TxParams, call), at)
        except Exception as exc:
            data = revert_data_from(exc)
            if data is not None:
                return decode_revert(data)
    return TransactionReverted(f"{name} reverted in block {block} (tx {bytes(receipt['transactionHash']).hex()})")


# ---------------------------------------------------------------- signed submissions (EIP-712)

SUBMISSION_RECORD_BYTES = 104  # updateHash (32) ‖ numSamples (8) ‖ r (32) ‖ vs (32, EIP-2098)


def submission_typed_data(chain_id: int, contract: str, round: int, update_hash: HashLike, num_samples: int) -> dict[str, Any]:
    """The EIP-712 message a node signs to have its submission relayed (exactly what the contract hashes)."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "UpdateSubmission": [
                {"name": "round", "type": "uint256"},
                {"name": "updateHash", "type": "bytes32"},
                {"name": "numSamples", "type": "uint64"},
            ],
        },
        "primaryType": "UpdateSubmission",
        "domain": {
            "name": "FederatedLedger",
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(contract),
        },
        "message": {"round": round, "updateHash": to_bytes32(update_hash), "numSamples": num_samples},
    }


def sign_submission(
    account: LocalAccount, chain_id: int, contract: str, round: int, update_hash: HashLike, num_samples: int
) -> bytes:
    """A 104-byte record any relayer can post with `submit_updates_by_sig`; binds round, chain and contract."""
    from eth_account.messages import encode_typed_data

    typed = submission_typed_data(chain_id, contract, round, update_hash, num_samples)
    signed = account.sign_message(encode_typed_data(full_message=typed))
    vs = signed.s | ((signed.v - 27) << 255)
    return (
        to_bytes32(update_hash)
        + num_samples.to_bytes(8, "big")
        + signed.r.to_bytes(32, "big")
        + vs.to_bytes(32, "big")
    )


def recover_submission(chain_id: int, contract: str, round: int, record: bytes) -> tuple[str, str, int]:
    """(signer, update hash, sample count) of a signed record, checked off-chain as the contract
    checks it; `ValueError` for a malformed record or a non-canonical (high s) signature."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    if len(record) != SUBMISSION_RECORD_BYTES:
        raise ValueError(f"a signed submission record is {SUBMISSION_RECORD_BYTES} bytes, got {len(record)}")
    update_hash, num_samples = record[:32].hex(), int.from_bytes(record[32:40], "big")
    r, vs = int.from_bytes(record[40:72], "big"), int.from_bytes(record[72:104], "big")
    s, v = vs & ((1 << 255) - 1), 27 + (vs >> 255)
    if s > _SECP256K1_HALF_ORDER:
        raise ValueError("signature s is in the upper half of the curve order (malleable): the contract refuses it")
    typed = submission_typed_data(chain_id, contract, round, update_hash, num_samples)
    signer = Account.recover_message(encode_typed_data(full_message=typed), vrs=(v, r, s))
    return to_checksum_address(signer), update_hash, num_samples


_SECP256K1_HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
