// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {FederatedLedger} from "../FederatedLedger.sol";
import {vm} from "./Vm.sol";

/// @dev The EIP-712 digest of UpdateSubmission(round, updateHash, numSamples) under the ledger's domain as
///      it would be on `chainId` at `verifyingContract`, written from the spec rather than from the contract.
function submissionDigest(
    uint256 chainId,
    address verifyingContract,
    uint256 round,
    bytes32 updateHash,
    uint64 numSamples
) pure returns (bytes32) {
    bytes32 domain = keccak256(
        abi.encode(
            keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
            keccak256("FederatedLedger"),
            keccak256("1"),
            chainId,
            verifyingContract
        )
    );
    bytes32 structHash = keccak256(
        abi.encode(
            keccak256("UpdateSubmission(uint256 round,bytes32 updateHash,uint64 numSamples)"),
            round,
            updateHash,
            numSamples
        )
    );
    return keccak256(abi.encodePacked(hex"1901", domain, structHash));
}

/// @dev `key`'s EIP-2098 compact signature over `digest`: vs = s with (v - 27) in the top bit.
function signCompact(uint256 key, bytes32 digest) pure returns (bytes32 r, bytes32 vs) {
    (uint8 v, bytes32 sigR, bytes32 s) = vm.sign(key, digest);
    r = sigR;
    vs = bytes32(uint256(s) | (uint256(v - 27) << 255));
}

/// @dev Assertions and fixtures shared by every suite: a ledger without an attestation quorum whose admin
///      and only aggregator is the test contract, a committed genesis, and two registered nodes.
abstract contract LedgerTestBase {
    error AssertionFailed(string what);
    error AssertEqUint(string what, uint256 got, uint256 want);
    error AssertEqBytes32(string what, bytes32 got, bytes32 want);
    error AssertEqAddress(string what, address got, address want);
    error AssertEqBytes(string what, bytes got, bytes want);

    uint256 internal constant START = 1_700_000_000;
    uint64 internal constant WINDOW = 1 hours;
    bytes32 internal constant GENESIS = keccak256("genesis model");
    bytes32 internal constant GENESIS_META = keccak256("genesis metadata");
    bytes32 internal constant MODEL_1 = keccak256("model 1");
    bytes32 internal constant META_1 = keccak256("metadata 1");
    bytes32 internal constant ROOT_1 = keccak256("included root 1");
    bytes32 internal constant UPDATE_A = keccak256("update a");
    bytes32 internal constant UPDATE_B = keccak256("update b");
    bytes32 internal constant REPORT_OK = keccak256("report ok");
    bytes32 internal constant REPORT_FAIL = keccak256("report fail");
    bytes32 internal constant RESOLUTION = keccak256("resolution");
    bytes32 internal constant POLICY_1 = keccak256("policy 1");
    address internal constant NODE_A = address(0xA11CE);
    address internal constant NODE_B = address(0xB0B);
    address internal constant OUTSIDER = address(0xBAD);

    FederatedLedger internal ledger;

    function setUp() public virtual {
        vm.warp(START);
        ledger = new FederatedLedger(0);
        ledger.commitGenesis(GENESIS, GENESIS_META);
        ledger.registerNode(NODE_A);
        ledger.registerNode(NODE_B);
    }

    // ------------------------------------------------------------------ helpers

    /// @dev Opens the next round on `base`, closing for submissions WINDOW seconds from now.
    function _openNext(bytes32 base, uint32 minUpdates) internal returns (uint256 round, uint64 deadline) {
        (uint64 lastRound,) = ledger.counters();
        round = uint256(lastRound) + 1;
        deadline = uint64(block.timestamp) + WINDOW;
        ledger.openRound(round, base, deadline, minUpdates);
    }

    function _submit(address node, uint256 round, bytes32 updateHash, uint64 numSamples) internal {
        vm.prank(node);
        ledger.submitUpdate(round, updateHash, numSamples);
    }

    function _expectEmit() internal {
        vm.expectEmit(true, true, true, true, address(ledger));
    }

    function _versionCount() internal view returns (uint64 versionCount) {
        (, versionCount) = ledger.counters();
    }

    function _state(uint256 round) internal view returns (FederatedLedger.RoundState state) {
        (,,, state) = ledger.getRound(round);
    }

    function _nonZero(bytes32 value) internal pure returns (bytes32) {
        return value == bytes32(0) ? bytes32(uint256(1)) : value;
    }

    /// @dev forge-std's bound(), reimplemented: maps `x` into [lo, hi] without rejecting inputs.
    function _bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        return lo + x % (hi - lo + 1);
    }

    /// @dev Every aggregator-only function reverts LedgerNotAggregator(caller) for `caller`.
    function _assertAggregatorOnly(address caller) internal {
        bytes memory err = abi.encodeWithSelector(FederatedLedger.LedgerNotAggregator.selector, caller);
        vm.startPrank(caller);
        vm.expectRevert(err);
        ledger.commitGenesis(MODEL_1, META_1);
        vm.expectRevert(err);
        ledger.openRound(1, GENESIS, uint64(block.timestamp) + WINDOW, 1);
        vm.expectRevert(err);
        ledger.rejectUpdate(1, NODE_A, 1);
        vm.expectRevert(err);
        ledger.finalizeRound(1, MODEL_1, ROOT_1, 1, META_1);
        vm.expectRevert(err);
        ledger.abandonRound(1, 1);
        vm.stopPrank();
    }

    /// @dev Every admin-only function reverts LedgerNotAdmin(caller) for `caller`.
    function _assertAdminOnly(address caller, address target) internal {
        bytes memory err = abi.encodeWithSelector(FederatedLedger.LedgerNotAdmin.selector, caller);
        vm.startPrank(caller);
        vm.expectRevert(err);
        ledger.registerNode(target);
        vm.expectRevert(err);
        ledger.revokeNode(target);
        vm.expectRevert(err);
        ledger.setAggregator(target, true);
        vm.expectRevert(err);
        ledger.setAggregator(target, false);
        vm.expectRevert(err);
        ledger.transferAdmin(target);
        vm.expectRevert(err);
        ledger.setAuditor(target, true);
        vm.expectRevert(err);
        ledger.setAuditor(target, false);
        vm.expectRevert(err);
        ledger.resolveAttestation(GENESIS, target, REPORT_FAIL);
        vm.expectRevert(err);
        ledger.setPolicy(POLICY_1);
        vm.stopPrank();
    }

    // ------------------------------------------------------------------ EIP-712

    function _submissionDigest(
        uint256 chainId,
        address verifyingContract,
        uint256 round,
        bytes32 updateHash,
        uint64 numSamples
    ) internal pure returns (bytes32) {
        return submissionDigest(chainId, verifyingContract, round, updateHash, numSamples);
    }

    function _signCompact(uint256 key, bytes32 digest) internal pure returns (bytes32 r, bytes32 vs) {
        return signCompact(key, digest);
    }

    /// @dev One 104-byte submitUpdatesBySig record, updateHash ‖ numSamples ‖ r ‖ vs, signed by `key` for
    ///      this ledger on this chain.
    function _record(uint256 key, uint256 round, bytes32 updateHash, uint64 numSamples)
        internal
        view
        returns (bytes memory)
    {
        bytes32 digest = _submissionDigest(block.chainid, address(ledger), round, updateHash, numSamples);
        (bytes32 r, bytes32 vs) = _signCompact(key, digest);
        return abi.encodePacked(updateHash, numSamples, r, vs);
    }

    // ------------------------------------------------------------------ assertions

    function assertTrue(bool condition, string memory what) internal pure {
        if (!condition) revert AssertionFailed(what);
    }

    function assertEq(bool got, bool want, string memory what) internal pure {
        if (got != want) revert AssertEqUint(what, got ? 1 : 0, want ? 1 : 0);
    }

    function assertEq(uint256 got, uint256 want, string memory what) internal pure {
        if (got != want) revert AssertEqUint(what, got, want);
    }

    function assertEq(bytes32 got, bytes32 want, string memory what) internal pure {
        if (got != want) revert AssertEqBytes32(what, got, want);
    }

    function assertEq(address got, address want, string memory what) internal pure {
        if (got != want) revert AssertEqAddress(what, got, want);
    }

    function assertEq(bytes memory got, bytes memory want, string memory what) internal pure {
        if (keccak256(got) != keccak256(want)) revert AssertEqBytes(what, got, want);
    }
}
