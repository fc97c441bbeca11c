"""Why an update was refused: the uint16 codes the chain records in `UpdateRejected(reasonCode)`.

The numbers are part of the on-chain record, so they never change meaning; new reasons take new
numbers. 0 is never used, so an unset slot cannot be read as a reason.
"""

from __future__ import annotations

from enum import IntEnum


class RejectReason(IntEnum):
    """A rejection code shared by the aggregator, the contract's events and the audit API."""

    HASH_MISMATCH = 1
    MISSING_BLOB = 2
    MALFORMED = 3
    NAME_MISMATCH = 4
    SHAPE_MISMATCH = 5
    DTYPE_MISMATCH = 6
    NON_FINITE = 7
    NORM_TOO_LARGE = 8
    TOO_LARGE = 9
    ENCODING_MISMATCH = 10
    PRIVACY_CLAIM_INVALID = 11
    PRIVACY_BUDGET_EXHAUSTED = 12
    DUPLICATE_UPDATE = 13
    NO_CHANGE = 14

    @property
    def description(self) -> str:
        """One line for people reading an audit trail."""
        return _DESCRIPTIONS[self]


_DESCRIPTIONS: dict[RejectReason, str] = {
    RejectReason.HASH_MISMATCH: "the fetched bytes do not hash to the update hash on chain",
    RejectReason.MISSING_BLOB: "no blob with the update hash could be fetched",
    RejectReason.MALFORMED: "the blob is not a valid safetensors file",
    RejectReason.NAME_MISMATCH: "tensor names differ from the base model's",
    RejectReason.SHAPE_MISMATCH: "a tensor's shape differs from the base model's",
    RejectReason.DTYPE_MISMATCH: "a tensor's dtype is not the one the pinned encoding stores",
    RejectReason.NON_FINITE: "a tensor holds NaN or infinity",
    RejectReason.NORM_TOO_LARGE: "the update moves the model further (L2 norm) than the bound allows",
    RejectReason.TOO_LARGE: "the blob exceeds the size limit",
    RejectReason.ENCODING_MISMATCH: "the blob is not in the update encoding the federation pinned at genesis",
    RejectReason.PRIVACY_CLAIM_INVALID: (
        "the privacy claim is missing, malformed, disagrees with the pinned DP policy, "
        "or states an ε the accountant does not reproduce from the node's claims"
    ),
    RejectReason.PRIVACY_BUDGET_EXHAUSTED: "the node's cumulative ε would exceed the federation's per-node budget",
    RejectReason.DUPLICATE_UPDATE: "another node submitted the same update hash earlier in the round",
    RejectReason.NO_CHANGE: "the update equals the base model: nothing was trained (a free-rider)",
}


class AbandonReason(IntEnum):
    """Why a round closed without a model: the uint16 code in `RoundAbandoned(reasonCode)`."""

    NO_SUBMISSIONS = 1
    NO_VALID_UPDATES = 2
    MODEL_UNCHANGED = 3  # the aggregate is a version already committed: nothing new to commit
