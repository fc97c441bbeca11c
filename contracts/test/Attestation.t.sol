// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {FederatedLedger} from "../FederatedLedger.sol";
import {LedgerTestBase} from "./LedgerTestBase.sol";
import {vm} from "./Vm.sol";

/// @dev A ledger deployed with an attestation quorum of 2 and three auditors; genesis not yet attested.
abstract contract AttestationTestBase is LedgerTestBase {
    uint8 internal constant QUORUM = 2;
    address internal constant AUDITOR_1 = address(0xA0D1);
    address internal constant AUDITOR_2 = address(0xA0D2);
    address internal constant AUDITOR_3 = address(0xA0D3);

    function setUp() public virtual override {
        vm.warp(START);
        ledger = new FederatedLedger(QUORUM);
        ledger.commitGenesis(GENESIS, GENESIS_META);
        ledger.registerNode(NODE_A);
        ledger.registerNode(NODE_B);
        ledger.setAuditor(AUDITOR_1, true);
        ledger.setAuditor(AUDITOR_2, true);
        ledger.setAuditor(AUDITOR_3, true);
    }

    function _attest(address auditor, bytes32 modelHash, bool ok) internal {
        vm.prank(auditor);
        ledger.attestVersion(modelHash, ok, ok ? REPORT_OK : REPORT_FAIL);
    }

    function _expectNotAttested(bytes32 base, uint256 okCount, uint256 unresolved) internal {
        vm.expectRevert(
            abi.encodeWithSelector(FederatedLedger.LedgerBaseNotAttested.selector, base, okCount, QUORUM, unresolved)
        );
        ledger.openRound(1, base, uint64(block.timestamp) + WINDOW, 1);
    }

    function _assertCounts(bytes32 modelHash, uint256 ok, uint256 currentOk, uint256 failed, uint256 unresolved)
        internal
        view
    {
        (uint256 okCount, uint256 currentOkCount, uint256 failedCount, uint256 unresolvedCount) =
            ledger.attestationCounts(modelHash);
        assertEq(okCount, ok, "ok count");
        assertEq(currentOkCount, currentOk, "current ok count");
        assertEq(failedCount, failed, "failed count");
        assertEq(unresolvedCount, unresolved, "unresolved count");
    }
}

/// @notice The auditor role, attestations, their resolution, and the quorum gate on openRound.
contract FederatedLedgerAttestationTest is AttestationTestBase {
    // ------------------------------------------------------------------ auditor role

    function test_setAuditor_grantsAndRemovesAndEmits() public {
        _expectEmit();
        emit FederatedLedger.AuditorSet(OUTSIDER, true);
        ledger.setAuditor(OUTSIDER, true);
        assertTrue(ledger.isAuditor(OUTSIDER), "granted");

        _expectEmit();
        emit FederatedLedger.AuditorSet(OUTSIDER, false);
        ledger.setAuditor(OUTSIDER, false);
        assertTrue(!ledger.isAuditor(OUTSIDER), "removed");
    }

    function test_setAuditor_revertsWhenUnchanged() public {
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerAuditorUnchanged.selector, OUTSIDER, false));
        ledger.setAuditor(OUTSIDER, false);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerAuditorUnchanged.selector, AUDITOR_1, true));
        ledger.setAuditor(AUDITOR_1, true);
    }

    function test_setAuditor_revertsOnZeroAddress() public {
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroAddress.selector));
        ledger.setAuditor(address(0), true);
    }

    function test_auditorRole_isIndependentOfOtherRoles() public {
        ledger.setAuditor(NODE_A, true);
        ledger.setAggregator(NODE_A, true);
        assertTrue(ledger.isNode(NODE_A) && ledger.isAggregator(NODE_A) && ledger.isAuditor(NODE_A), "all three");
        ledger.setAuditor(NODE_A, false);
        assertTrue(ledger.isNode(NODE_A) && ledger.isAggregator(NODE_A), "other roles stay");
        ledger.revokeNode(NODE_A);
        ledger.setAggregator(NODE_A, false);
        ledger.setAuditor(NODE_A, true);
        assertTrue(ledger.isAuditor(NODE_A) && !ledger.isNode(NODE_A), "auditor only");
    }

    function test_setAuditor_allowsMaxAuditorsDistinctAccountsEver() public {
        // Three indices are taken in setUp; fill the other 29.
        for (uint160 i = 0; i < 29; ++i) {
            ledger.setAuditor(address(0x1000 + i), true);
        }
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerTooManyAuditors.selector, 32));
        ledger.setAuditor(OUTSIDER, true);

        // Removing an auditor frees no index, but the removed account can come back on its own index.
        ledger.setAuditor(AUDITOR_1, false);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerTooManyAuditors.selector, 32));
        ledger.setAuditor(OUTSIDER, true);
        ledger.setAuditor(AUDITOR_1, true);
        assertTrue(ledger.isAuditor(AUDITOR_1), "re-granted");

        // All 32 bits work: the last index attests and counts.
        address last = address(0x1000 + 28);
        _attest(last, GENESIS, true);
        _attest(AUDITOR_1, GENESIS, true);
        _assertCounts(GENESIS, 2, 2, 0, 0);
        (bool attested, bool ok,) = ledger.attestationOf(GENESIS, last);
        assertTrue(attested && ok, "last index attested");
        ledger.openRound(1, GENESIS, uint64(block.timestamp) + WINDOW, 1);
    }

    // ------------------------------------------------------------------ attestVersion

    function test_attestVersion_emitsAndCounts() public {
        _expectEmit();
        emit FederatedLedger.VersionAttested(GENESIS, AUDITOR_1, true, REPORT_OK);
        vm.prank(AUDITOR_1);
        ledger.attestVersion(GENESIS, true, REPORT_OK);

        _expectEmit();
        emit FederatedLedger.VersionAttested(GENESIS, AUDITOR_2, false, REPORT_FAIL);
        vm.prank(AUDITOR_2);
        ledger.attestVersion(GENESIS, false, REPORT_FAIL);

        _assertCounts(GENESIS, 1, 1, 1, 1);
        (bool attested, bool ok, bool resolved) = ledger.attestationOf(GENESIS, AUDITOR_1);
        assertTrue(attested && ok && !resolved, "auditor 1: ok");
        (attested, ok, resolved) = ledger.attestationOf(GENESIS, AUDITOR_2);
        assertTrue(attested && !ok && !resolved, "auditor 2: failing");
        (attested, ok, resolved) = ledger.attestationOf(GENESIS, AUDITOR_3);
        assertTrue(!attested && !ok && !resolved, "auditor 3: nothing");
        (attested,,) = ledger.attestationOf(GENESIS, OUTSIDER);
        assertTrue(!attested, "never an auditor");
    }

    function test_attestVersion_leavesTheLineageUntouched() public {
        _attest(AUDITOR_1, GENESIS, true);
        _attest(AUDITOR_2, GENESIS, false);
        (bool committed, uint64 version, uint64 round, uint32 includedCount) = ledger.modelOf(GENESIS);
        assertTrue(committed, "committed");
        assertEq(version, 0, "version");
        assertEq(round, 0, "round");
        assertEq(includedCount, 0, "includedCount");
    }

    function test_attestVersion_revertsForNonAuditors() public {
        vm.prank(NODE_A);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotAuditor.selector, NODE_A));
        ledger.attestVersion(GENESIS, true, REPORT_OK);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotAuditor.selector, address(this)));
        ledger.attestVersion(GENESIS, true, REPORT_OK);
    }

    function test_attestVersion_revertsOnUncommittedVersion() public {
        vm.prank(AUDITOR_1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerModelNotCommitted.selector, MODEL_1));
        ledger.attestVersion(MODEL_1, true, REPORT_OK);
    }

    function test_attestVersion_revertsOnZeroReport() public {
        vm.prank(AUDITOR_1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroHash.selector));
        ledger.attestVersion(GENESIS, true, bytes32(0));
    }

    function test_attestVersion_isOncePerAuditorPerVersion() public {
        _attest(AUDITOR_1, GENESIS, true);
        bytes memory again = abi.encodeWithSelector(FederatedLedger.LedgerAlreadyAttested.selector, GENESIS, AUDITOR_1);
        vm.prank(AUDITOR_1);
        vm.expectRevert(again);
        ledger.attestVersion(GENESIS, false, REPORT_FAIL);
        vm.prank(AUDITOR_1);
        vm.expectRevert(again);
        ledger.attestVersion(GENESIS, true, REPORT_OK);

        _attest(AUDITOR_2, GENESIS, false);
        vm.prank(AUDITOR_2);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerAlreadyAttested.selector, GENESIS, AUDITOR_2));
        ledger.attestVersion(GENESIS, true, REPORT_OK);
    }

    function test_attestVersion_removedAuditorCannotAttestNorReattestAfterComingBack() public {
        _attest(AUDITOR_1, GENESIS, true);
        ledger.setAuditor(AUDITOR_1, false);
        vm.prank(AUDITOR_1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotAuditor.selector, AUDITOR_1));
        ledger.attestVersion(GENESIS, true, REPORT_OK);

        ledger.setAuditor(AUDITOR_1, true);
        vm.prank(AUDITOR_1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerAlreadyAttested.selector, GENESIS, AUDITOR_1));
        ledger.attestVersion(GENESIS, false, REPORT_FAIL);
    }

    function test_attestVersion_eachVersionHasItsOwnAttestations() public {
        _attest(AUDITOR_1, GENESIS, true);
        _attest(AUDITOR_2, GENESIS, true);
        (uint256 round,) = _openNext(GENESIS, 1);
        ledger.finalizeRound(round, MODEL_1, ROOT_1, 1, META_1);

        _assertCounts(MODEL_1, 0, 0, 0, 0);
        _attest(AUDITOR_1, MODEL_1, false);
        _assertCounts(MODEL_1, 0, 0, 1, 1);
        _assertCounts(GENESIS, 2, 2, 0, 0);
        // A finalized version can still be attested later (genesis here), any time.
        _attest(AUDITOR_3, GENESIS, true);
        _assertCounts(GENESIS, 3, 3, 0, 0);
    }

    // ------------------------------------------------------------------ resolveAttestation

    function test_resolveAttestation_emitsAndStopsTheFailureBlocking() public {
        _attest(AUDITOR_1, GENESIS, true);
        _attest(AUDITOR_2, GENESIS, true);
        _attest(AUDITOR_3, GENESIS, false);
        _expectNotAttested(GENESIS, 2, 1);

        _expectEmit();
        emit FederatedLedger.AttestationResolved(GENESIS, AUDITOR_3, RESOLUTION);
        ledger.resolveAttestation(GENESIS, AUDITOR_3, RESOLUTION);

        _assertCounts(GENESIS, 2, 2, 1, 0);
        (bool attested, bool ok, bool resolved) = ledger.attestationOf(GENESIS, AUDITOR_3);
        assertTrue(attested && !ok && resolved, "failure on record, resolved, not turned ok");
        ledger.openRound(1, GENESIS, uint64(block.timestamp) + WINDOW, 1);
    }

    function test_resolveAttestation_doesNotCountTowardTheQuorum() public {
        _attest(AUDITOR_1, GENESIS, true);
        _attest(AUDITOR_2, GENESIS, false);
        ledger.resolveAttestation(GENESIS, AUDITOR_2, RESOLUTION);
        _expectNotAttested(GENESIS, 1, 0);
    }

    function test_resolveAttestation_revertsWithoutAnUnresolvedFailure() public {
        _attest(AUDITOR_1, GENESIS, true);
        _attest(AUDITOR_2, GENESIS, false);
        ledger.resolveAttestation(GENESIS, AUDITOR_2, RESOLUTION);

        address[4] memory accounts = [AUDITOR_1, AUDITOR_2, AUDITOR_3, OUTSIDER];
        // ok attestation, already resolved, no attestation, never an auditor
        for (uint256 i = 0; i < accounts.length; ++i) {
            vm.expectRevert(
                abi.encodeWithSelector(FederatedLedger.LedgerNoFailingAttestation.selector, GENESIS, accounts[i])
            );
            ledger.resolveAttestation(GENESIS, accounts[i], RESOLUTION);
        }
        vm.expectRevert(
            abi.encodeWithSelector(FederatedLedger.LedgerNoFailingAttestation.selector, MODEL_1, AUDITOR_2)
        );
        ledger.resolveAttestation(MODEL_1, AUDITOR_2, RESOLUTION);
    }

    function test_resolveAttestation_revertsOnZeroResolution() public {
        _attest(AUDITOR_1, GENESIS, false);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroHash.selector));
        ledger.resolveAttestation(GENESIS, AUDITOR_1, bytes32(0));
    }

    function test_resolveAttestation_isAdminOnly() public {
        _attest(AUDITOR_1, GENESIS, false);
        vm.prank(AUDITOR_2);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotAdmin.selector, AUDITOR_2));
        ledger.resolveAttestation(GENESIS, AUDITOR_1, RESOLUTION);
    }

    // ------------------------------------------------------------------ the gate on openRound

    function test_openRound_needsQuorumOfOkAttestations() public {
        _expectNotAttested(GENESIS, 0, 0);
        _attest(AUDITOR_1, GENESIS, true);
        _expectNotAttested(GENESIS, 1, 0);
        _attest(AUDITOR_2, GENESIS, true);

        uint64 deadline = uint64(block.timestamp) + WINDOW;
        _expectEmit();
        emit FederatedLedger.RoundOpened(1, GENESIS, deadline, 1);
        ledger.openRound(1, GENESIS, deadline, 1);
    }

    function test_openRound_unresolvedFailureBlocksWhateverTheOkCount() public {
        _attest(AUDITOR_1, GENESIS, true);
        _attest(AUDITOR_2, GENESIS, false);
        _attest(AUDITOR_3, GENESIS, true);
        _expectNotAttested(GENESIS, 2, 1);
    }

    function test_openRound_countsOnlyCurrentAuditorsOk() public {
        _attest(AUDITOR_1, GENESIS, true);
        _attest(AUDITOR_2, GENESIS, true);
        ledger.setAuditor(AUDITOR_2, false);
        _assertCounts(GENESIS, 2, 1, 0, 0);
        _expectNotAttested(GENESIS, 1, 0);

        ledger.setAuditor(AUDITOR_2, true);
        ledger.openRound(1, GENESIS, uint64(block.timestamp) + WINDOW, 1);
    }

    function test_openRound_removedAuditorsFailureStillBlocksUntilResolved() public {
        _attest(AUDITOR_1, GENESIS, true);
        _attest(AUDITOR_2, GENESIS, true);
        _attest(AUDITOR_3, GENESIS, false);
        ledger.setAuditor(AUDITOR_3, false);
        _expectNotAttested(GENESIS, 2, 1);
        ledger.resolveAttestation(GENESIS, AUDITOR_3, RESOLUTION);
        ledger.openRound(1, GENESIS, uint64(block.timestamp) + WINDOW, 1);
    }

    function test_openRound_gatesEveryBaseNotOnlyGenesis() public {
        _attest(AUDITOR_1, GENESIS, true);
        _attest(AUDITOR_2, GENESIS, true);
        (uint256 round,) = _openNext(GENESIS, 1);
        ledger.finalizeRound(round, MODEL_1, ROOT_1, 1, META_1);

        uint64 deadline = uint64(block.timestamp) + WINDOW;
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerBaseNotAttested.selector, MODEL_1, 0, QUORUM, 0));
        ledger.openRound(2, MODEL_1, deadline, 1);
        // Genesis is still attested, so a round can go back to it.
        ledger.openRound(2, GENESIS, deadline, 1);
    }

    function test_openRound_checksOrderAndBaseBeforeTheGate() public {
        uint64 deadline = uint64(block.timestamp) + WINDOW;
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerRoundOutOfOrder.selector, 1, 2));
        ledger.openRound(2, GENESIS, deadline, 1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerModelNotCommitted.selector, MODEL_1));
        ledger.openRound(1, MODEL_1, deadline, 1);
    }

    function test_noQuorum_attestationsAreRecordedButDoNotGate() public {
        FederatedLedger ungated = new FederatedLedger(0);
        ungated.commitGenesis(GENESIS, GENESIS_META);
        ungated.setAuditor(AUDITOR_1, true);
        vm.prank(AUDITOR_1);
        ungated.attestVersion(GENESIS, false, REPORT_FAIL);
        (,, uint256 failed, uint256 unresolved) = ungated.attestationCounts(GENESIS);
        assertEq(failed, 1, "failure recorded");
        assertEq(unresolved, 1, "unresolved");
        ungated.openRound(1, GENESIS, uint64(block.timestamp) + WINDOW, 1);
    }
}

/// @notice The gate against a plain model: any mix of ok, failing, resolved and removed auditors.
contract FederatedLedgerAttestationFuzzTest is AttestationTestBase {
    uint256 internal constant AUDITORS = 8;

    /// @dev Auditor i attests ok if bit i of `okMask`, else fails if bit i of `failMask`; bit i of
    ///      `resolveMask` resolves a failure; bit i of `removeMask` removes the auditor afterwards.
    function testFuzz_openRound_gateMatchesModel(
        uint8 quorum,
        uint8 okMask,
        uint8 failMask,
        uint8 resolveMask,
        uint8 removeMask
    ) public {
        quorum = uint8(_bound(quorum, 1, AUDITORS));
        ledger = new FederatedLedger(quorum);
        ledger.commitGenesis(GENESIS, GENESIS_META);
        uint256 okCount;
        uint256 currentOk;
        uint256 failed;
        uint256 unresolved;
        for (uint256 i = 0; i < AUDITORS; ++i) {
            address auditor = address(uint160(0x5000 + i));
            ledger.setAuditor(auditor, true);
            bool removed = (removeMask >> i) & 1 == 1;
            if ((okMask >> i) & 1 == 1) {
                _attest(auditor, GENESIS, true);
                ++okCount;
                if (!removed) ++currentOk;
            } else if ((failMask >> i) & 1 == 1) {
                _attest(auditor, GENESIS, false);
                ++failed;
                if ((resolveMask >> i) & 1 == 1) ledger.resolveAttestation(GENESIS, auditor, RESOLUTION);
                else ++unresolved;
            }
            if (removed) ledger.setAuditor(auditor, false);
        }
        _assertCounts(GENESIS, okCount, currentOk, failed, unresolved);

        uint64 deadline = uint64(block.timestamp) + WINDOW;
        if (currentOk >= quorum && unresolved == 0) {
            ledger.openRound(1, GENESIS, deadline, 1);
            assertTrue(_state(1) == FederatedLedger.RoundState.Open, "opened");
        } else {
            vm.expectRevert(
                abi.encodeWithSelector(
                    FederatedLedger.LedgerBaseNotAttested.selector, GENESIS, currentOk, quorum, unresolved
                )
            );
            ledger.openRound(1, GENESIS, deadline, 1);
        }
    }

    function testFuzz_attestVersion_onlyCommittedVersions(bytes32 modelHash, bool ok) public {
        vm.assume(modelHash != GENESIS);
        vm.prank(AUDITOR_1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerModelNotCommitted.selector, modelHash));
        ledger.attestVersion(modelHash, ok, REPORT_OK);
    }

    function testFuzz_attestVersion_revertsForNonAuditors(address caller) public {
        vm.assume(caller != AUDITOR_1 && caller != AUDITOR_2 && caller != AUDITOR_3);
        vm.prank(caller);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotAuditor.selector, caller));
        ledger.attestVersion(GENESIS, true, REPORT_OK);
    }
}
