// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {FederatedLedger} from "../FederatedLedger.sol";
import {LedgerTestBase, signCompact, submissionDigest} from "./LedgerTestBase.sol";
import {Vm, vm} from "./Vm.sol";

/// @notice Unit tests: each function's effect, its event with arguments, and each error with arguments.
contract FederatedLedgerTest is LedgerTestBase {
    // ------------------------------------------------------------------ roles

    function test_constructor_makesDeployerAdminAndAggregator() public {
        vm.recordLogs();
        FederatedLedger fresh = new FederatedLedger(0);
        bytes32[] memory adminTopics = vm.getRecordedLogs()[0].topics;
        assertEq(adminTopics[0], FederatedLedger.AdminTransferred.selector, "first event");
        assertEq(adminTopics[1], bytes32(0), "previous admin");
        assertEq(adminTopics[2], bytes32(uint256(uint160(address(this)))), "new admin");
        assertEq(fresh.admin(), address(this), "admin");
        assertTrue(fresh.isAggregator(address(this)), "deployer is aggregator");
        assertTrue(!fresh.isNode(address(this)), "deployer is not a node");
        assertEq(fresh.genesisHash(), bytes32(0), "no genesis yet");
    }

    function test_constructor_emitsAggregatorSet() public {
        vm.recordLogs();
        FederatedLedger fresh = new FederatedLedger(0);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, 2, "constructor events");
        assertEq(logs[1].emitter, address(fresh), "emitter");
        assertEq(logs[1].topics[0], FederatedLedger.AggregatorSet.selector, "second event");
        assertEq(logs[1].topics[1], bytes32(uint256(uint160(address(this)))), "account");
        assertTrue(abi.decode(logs[1].data, (bool)), "enabled");
    }

    function test_constructor_setsAttestationQuorum() public {
        assertEq(ledger.attestationQuorum(), 0, "default fixture has no gate");
        FederatedLedger gated = new FederatedLedger(32);
        assertEq(gated.attestationQuorum(), 32, "quorum");
        assertEq(gated.MAX_AUDITORS(), 32, "max auditors");
    }

    function test_constructor_revertsOnQuorumAboveMaxAuditors() public {
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerQuorumTooLarge.selector, 33, 32));
        new FederatedLedger(33);
    }

    function test_transferAdmin_onlyNamesPendingAdminAndEmits() public {
        _expectEmit();
        emit FederatedLedger.AdminTransferStarted(address(this), OUTSIDER);
        ledger.transferAdmin(OUTSIDER);
        assertEq(ledger.admin(), address(this), "admin unchanged until accepted");
        assertEq(ledger.pendingAdmin(), OUTSIDER, "pending admin");

        vm.prank(OUTSIDER);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotAdmin.selector, OUTSIDER));
        ledger.registerNode(address(0xC0FFEE));
        ledger.registerNode(address(0xC0FFEE));
    }

    function test_acceptAdmin_movesRoleAndEmits() public {
        ledger.transferAdmin(OUTSIDER);
        _expectEmit();
        emit FederatedLedger.AdminTransferred(address(this), OUTSIDER);
        vm.prank(OUTSIDER);
        ledger.acceptAdmin();
        assertEq(ledger.admin(), OUTSIDER, "admin");
        assertEq(ledger.pendingAdmin(), address(0), "pending cleared");
        assertTrue(ledger.isAggregator(address(this)), "roles other than admin stay");

        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotAdmin.selector, address(this)));
        ledger.registerNode(address(0xC0FFEE));
        vm.prank(OUTSIDER);
        ledger.registerNode(address(0xC0FFEE));
    }

    function test_acceptAdmin_revertsForAnyoneButThePendingAdmin() public {
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotPendingAdmin.selector, address(this)));
        ledger.acceptAdmin();

        ledger.transferAdmin(OUTSIDER);
        vm.prank(NODE_A);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotPendingAdmin.selector, NODE_A));
        ledger.acceptAdmin();
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotPendingAdmin.selector, address(this)));
        ledger.acceptAdmin();
    }

    function test_acceptAdmin_worksOnce() public {
        ledger.transferAdmin(OUTSIDER);
        vm.prank(OUTSIDER);
        ledger.acceptAdmin();
        vm.prank(OUTSIDER);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotPendingAdmin.selector, OUTSIDER));
        ledger.acceptAdmin();
    }

    function test_transferAdmin_replacesThePendingAdmin() public {
        ledger.transferAdmin(OUTSIDER);
        _expectEmit();
        emit FederatedLedger.AdminTransferStarted(address(this), NODE_B);
        ledger.transferAdmin(NODE_B);
        assertEq(ledger.pendingAdmin(), NODE_B, "replaced");
        vm.prank(OUTSIDER);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotPendingAdmin.selector, OUTSIDER));
        ledger.acceptAdmin();

        // Naming yourself withdraws the offer.
        ledger.transferAdmin(address(this));
        vm.prank(NODE_B);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotPendingAdmin.selector, NODE_B));
        ledger.acceptAdmin();
    }

    function test_transferAdmin_revertsOnZeroAddress() public {
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroAddress.selector));
        ledger.transferAdmin(address(0));
    }

    function test_setAggregator_grantsAndRemovesAndEmits() public {
        _expectEmit();
        emit FederatedLedger.AggregatorSet(OUTSIDER, true);
        ledger.setAggregator(OUTSIDER, true);
        assertTrue(ledger.isAggregator(OUTSIDER), "granted");

        _expectEmit();
        emit FederatedLedger.AggregatorSet(OUTSIDER, false);
        ledger.setAggregator(OUTSIDER, false);
        assertTrue(!ledger.isAggregator(OUTSIDER), "removed");
    }

    function test_setAggregator_revertsWhenUnchanged() public {
        vm.expectRevert(
            abi.encodeWithSelector(FederatedLedger.LedgerAggregatorUnchanged.selector, OUTSIDER, false)
        );
        ledger.setAggregator(OUTSIDER, false);
        vm.expectRevert(
            abi.encodeWithSelector(FederatedLedger.LedgerAggregatorUnchanged.selector, address(this), true)
        );
        ledger.setAggregator(address(this), true);
    }

    function test_setAggregator_revertsOnZeroAddress() public {
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroAddress.selector));
        ledger.setAggregator(address(0), true);
    }

    function test_roles_areIndependent() public {
        ledger.setAggregator(NODE_A, true);
        ledger.revokeNode(NODE_A);
        assertTrue(ledger.isAggregator(NODE_A), "revoking the node role keeps the aggregator role");
        ledger.registerNode(NODE_A);
        ledger.setAggregator(NODE_A, false);
        assertTrue(ledger.isNode(NODE_A), "removing the aggregator role keeps the node role");
    }

    function test_registerNode_emitsAndGrantsRole() public {
        _expectEmit();
        emit FederatedLedger.NodeRegistered(OUTSIDER);
        ledger.registerNode(OUTSIDER);
        assertTrue(ledger.isNode(OUTSIDER), "registered");
    }

    function test_registerNode_revertsWhenAlreadyRegistered() public {
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNodeAlreadyRegistered.selector, NODE_A));
        ledger.registerNode(NODE_A);
    }

    function test_registerNode_revertsOnZeroAddress() public {
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroAddress.selector));
        ledger.registerNode(address(0));
    }

    function test_revokeNode_emitsAndStopsSubmissionsButKeepsRecord() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        _submit(NODE_A, round, UPDATE_A, 10);

        _expectEmit();
        emit FederatedLedger.NodeRevoked(NODE_A);
        ledger.revokeNode(NODE_A);
        assertTrue(!ledger.isNode(NODE_A), "revoked");
        assertEq(ledger.submissionOf(round, NODE_A), UPDATE_A, "past submission stays on record");

        vm.prank(NODE_A);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotNode.selector, NODE_A));
        ledger.submitUpdate(round, UPDATE_B, 10);
    }

    function test_revokeNode_revertsForUnregistered() public {
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotNode.selector, OUTSIDER));
        ledger.revokeNode(OUTSIDER);
    }

    function test_revokedNode_canBeRegisteredAgain() public {
        ledger.revokeNode(NODE_A);
        _expectEmit();
        emit FederatedLedger.NodeRegistered(NODE_A);
        ledger.registerNode(NODE_A);
        (uint256 round,) = _openNext(GENESIS, 1);
        _submit(NODE_A, round, UPDATE_A, 1);
        assertEq(ledger.submissionOf(round, NODE_A), UPDATE_A, "submission");
    }

    // ------------------------------------------------------------------ genesis

    function test_commitGenesis_emitsVersionZero() public {
        FederatedLedger fresh = new FederatedLedger(0);
        vm.expectEmit(true, true, true, true, address(fresh));
        emit FederatedLedger.ModelCommitted(0, GENESIS, bytes32(0), 0, bytes32(0), 0, GENESIS_META);
        fresh.commitGenesis(GENESIS, GENESIS_META);

        assertEq(fresh.genesisHash(), GENESIS, "genesis hash");
        (bool committed, uint64 version, uint64 round, uint32 includedCount) = fresh.modelOf(GENESIS);
        assertTrue(committed, "committed");
        assertEq(version, 0, "version");
        assertEq(round, 0, "round");
        assertEq(includedCount, 0, "includedCount");
        (uint64 lastRound, uint64 versionCount) = fresh.counters();
        assertEq(lastRound, 0, "lastRound");
        assertEq(versionCount, 1, "versionCount");
    }

    function test_commitGenesis_revertsWhenAlreadyCommitted() public {
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerGenesisAlreadyCommitted.selector, GENESIS));
        ledger.commitGenesis(MODEL_1, META_1);
    }

    function test_commitGenesis_revertsOnZeroHash() public {
        FederatedLedger fresh = new FederatedLedger(0);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroHash.selector));
        fresh.commitGenesis(bytes32(0), GENESIS_META);
    }

    // ------------------------------------------------------------------ openRound

    function test_openRound_emitsAndStoresRound() public {
        uint64 deadline = uint64(START) + WINDOW;
        _expectEmit();
        emit FederatedLedger.RoundOpened(1, GENESIS, deadline, 3);
        ledger.openRound(1, GENESIS, deadline, 3);

        (bytes32 base, uint64 storedDeadline, uint32 minUpdates, FederatedLedger.RoundState state) =
            ledger.getRound(1);
        assertEq(base, GENESIS, "base");
        assertEq(storedDeadline, deadline, "deadline");
        assertEq(minUpdates, 3, "minUpdates");
        assertTrue(state == FederatedLedger.RoundState.Open, "state Open");
        (uint64 lastRound,) = ledger.counters();
        assertEq(lastRound, 1, "lastRound");
    }

    function test_openRound_revertsOutOfOrder() public {
        uint64 deadline = uint64(START) + WINDOW;
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerRoundOutOfOrder.selector, 1, 2));
        ledger.openRound(2, GENESIS, deadline, 1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerRoundOutOfOrder.selector, 1, 0));
        ledger.openRound(0, GENESIS, deadline, 1);
    }

    function test_openRound_revertsWhilePreviousOpen() public {
        (, uint64 deadline) = _openNext(GENESIS, 1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerRoundStillOpen.selector, 1));
        ledger.openRound(2, GENESIS, deadline, 1);
    }

    function test_openRound_revertsOnUncommittedBase() public {
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerModelNotCommitted.selector, MODEL_1));
        ledger.openRound(1, MODEL_1, uint64(START) + WINDOW, 1);
    }

    function test_openRound_revertsWhenDeadlineNotInFuture() public {
        vm.expectRevert(
            abi.encodeWithSelector(FederatedLedger.LedgerDeadlineNotInFuture.selector, uint64(START), START)
        );
        ledger.openRound(1, GENESIS, uint64(START), 1);
    }

    function test_openRound_revertsOnZeroMinUpdates() public {
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroMinUpdates.selector));
        ledger.openRound(1, GENESIS, uint64(START) + WINDOW, 0);
    }

    function test_openRound_buildsOnTheLatestVersion() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        ledger.finalizeRound(round, MODEL_1, ROOT_1, 1, META_1);
        (uint256 next,) = _openNext(MODEL_1, 1);
        (bytes32 base,,,) = ledger.getRound(next);
        assertEq(base, MODEL_1, "round 2 base");
    }

    // ------------------------------------------------------------------ submitUpdate

    function test_submitUpdate_emitsAndStores() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        _expectEmit();
        emit FederatedLedger.UpdateSubmitted(round, NODE_A, UPDATE_A, 42);
        _submit(NODE_A, round, UPDATE_A, 42);
        assertEq(ledger.submissionOf(round, NODE_A), UPDATE_A, "stored");
        assertEq(ledger.submissionOf(round, NODE_B), bytes32(0), "other node untouched");
    }

    function test_submitUpdate_acceptedAtDeadlineExactly() public {
        (uint256 round, uint64 deadline) = _openNext(GENESIS, 1);
        vm.warp(deadline);
        _submit(NODE_A, round, UPDATE_A, 1);
        assertEq(ledger.submissionOf(round, NODE_A), UPDATE_A, "inclusive deadline");
    }

    function test_submitUpdate_revertsAfterDeadline() public {
        (uint256 round, uint64 deadline) = _openNext(GENESIS, 1);
        vm.warp(uint256(deadline) + 1);
        vm.prank(NODE_A);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerDeadlinePassed.selector, round, deadline));
        ledger.submitUpdate(round, UPDATE_A, 1);
    }

    function test_submitUpdate_revertsOnSecondSubmission() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        _submit(NODE_A, round, UPDATE_A, 1);
        vm.prank(NODE_A);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerAlreadySubmitted.selector, round, NODE_A));
        ledger.submitUpdate(round, UPDATE_B, 1);
    }

    function test_submitUpdate_revertsForOutsider() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        vm.prank(OUTSIDER);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotNode.selector, OUTSIDER));
        ledger.submitUpdate(round, UPDATE_A, 1);
    }

    function test_submitUpdate_revertsOnZeroHash() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        vm.prank(NODE_A);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroHash.selector));
        ledger.submitUpdate(round, bytes32(0), 1);
    }

    function test_submitUpdate_revertsOnZeroSamples() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        vm.prank(NODE_A);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroSamples.selector));
        ledger.submitUpdate(round, UPDATE_A, 0);
    }

    function test_submitUpdate_revertsOnRoundNeverOpened() public {
        vm.prank(NODE_A);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerRoundNotOpen.selector, 1));
        ledger.submitUpdate(1, UPDATE_A, 1);
    }

    // ------------------------------------------------------------------ rejectUpdate

    function test_rejectUpdate_emitsWithSubmittedHash() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        _submit(NODE_A, round, UPDATE_A, 1);
        _expectEmit();
        emit FederatedLedger.UpdateRejected(round, NODE_A, UPDATE_A, 7);
        ledger.rejectUpdate(round, NODE_A, 7);
        assertEq(ledger.rejectionOf(round, NODE_A), 7, "reason");
    }

    function test_rejectUpdate_allowedAfterDeadlineWhileOpen() public {
        (uint256 round, uint64 deadline) = _openNext(GENESIS, 1);
        _submit(NODE_A, round, UPDATE_A, 1);
        vm.warp(uint256(deadline) + 1 days);
        ledger.rejectUpdate(round, NODE_A, 2);
        assertEq(ledger.rejectionOf(round, NODE_A), 2, "reason");
    }

    function test_rejectUpdate_revertsOnZeroReason() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        _submit(NODE_A, round, UPDATE_A, 1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroReason.selector));
        ledger.rejectUpdate(round, NODE_A, 0);
    }

    function test_rejectUpdate_revertsWithoutSubmission() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNoSubmission.selector, round, NODE_B));
        ledger.rejectUpdate(round, NODE_B, 1);
    }

    function test_rejectUpdate_revertsWhenAlreadyRejected() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        _submit(NODE_A, round, UPDATE_A, 1);
        ledger.rejectUpdate(round, NODE_A, 1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerAlreadyRejected.selector, round, NODE_A));
        ledger.rejectUpdate(round, NODE_A, 2);
    }

    function test_rejectUpdate_revertsOnClosedRound() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        _submit(NODE_A, round, UPDATE_A, 1);
        ledger.finalizeRound(round, MODEL_1, ROOT_1, 1, META_1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerRoundNotOpen.selector, round));
        ledger.rejectUpdate(round, NODE_A, 1);
    }

    // ------------------------------------------------------------------ finalizeRound

    function test_finalizeRound_emitsWithParentAndNextVersion() public {
        (uint256 round,) = _openNext(GENESIS, 2);
        _expectEmit();
        emit FederatedLedger.ModelCommitted(round, MODEL_1, GENESIS, 1, ROOT_1, 2, META_1);
        ledger.finalizeRound(round, MODEL_1, ROOT_1, 2, META_1);

        (bool committed, uint64 version, uint64 modelRound, uint32 includedCount) = ledger.modelOf(MODEL_1);
        assertTrue(committed, "committed");
        assertEq(version, 1, "version");
        assertEq(modelRound, round, "round");
        assertEq(includedCount, 2, "includedCount");
        assertEq(_versionCount(), 2, "versionCount");
        assertTrue(_state(round) == FederatedLedger.RoundState.Finalized, "state Finalized");
    }

    function test_finalizeRound_beforeDeadlineNeedsMinUpdates() public {
        (uint256 round,) = _openNext(GENESIS, 3);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerTooFewUpdates.selector, round, 2, 3));
        ledger.finalizeRound(round, MODEL_1, ROOT_1, 2, META_1);
        ledger.finalizeRound(round, MODEL_1, ROOT_1, 3, META_1);
    }

    function test_finalizeRound_atDeadlineStillNeedsMinUpdates() public {
        (uint256 round, uint64 deadline) = _openNext(GENESIS, 3);
        vm.warp(deadline);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerTooFewUpdates.selector, round, 1, 3));
        ledger.finalizeRound(round, MODEL_1, ROOT_1, 1, META_1);
    }

    function test_finalizeRound_afterDeadlineNeedsOne() public {
        (uint256 round, uint64 deadline) = _openNext(GENESIS, 3);
        vm.warp(uint256(deadline) + 1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerTooFewUpdates.selector, round, 0, 1));
        ledger.finalizeRound(round, MODEL_1, ROOT_1, 0, META_1);
        ledger.finalizeRound(round, MODEL_1, ROOT_1, 1, META_1);
    }

    function test_finalizeRound_revertsOnZeroModelOrRoot() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroHash.selector));
        ledger.finalizeRound(round, bytes32(0), ROOT_1, 1, META_1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroHash.selector));
        ledger.finalizeRound(round, MODEL_1, bytes32(0), 1, META_1);
    }

    function test_finalizeRound_revertsOnAlreadyCommittedModel() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerModelAlreadyCommitted.selector, GENESIS));
        ledger.finalizeRound(round, GENESIS, ROOT_1, 1, META_1);
    }

    function test_finalizeRound_closesTheRound() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        _submit(NODE_A, round, UPDATE_A, 1);
        ledger.finalizeRound(round, MODEL_1, ROOT_1, 1, META_1);

        bytes memory notOpen = abi.encodeWithSelector(FederatedLedger.LedgerRoundNotOpen.selector, round);
        vm.prank(NODE_B);
        vm.expectRevert(notOpen);
        ledger.submitUpdate(round, UPDATE_B, 1);
        vm.expectRevert(notOpen);
        ledger.finalizeRound(round, keccak256("model 2"), ROOT_1, 1, META_1);
        vm.expectRevert(notOpen);
        ledger.abandonRound(round, 1);
    }

    function test_finalizeRound_revertsOnRoundNeverOpened() public {
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerRoundNotOpen.selector, 5));
        ledger.finalizeRound(5, MODEL_1, ROOT_1, 1, META_1);
    }

    // ------------------------------------------------------------------ abandonRound

    function test_abandonRound_emitsAfterDeadlineAndLetsNextRoundOpen() public {
        (uint256 round, uint64 deadline) = _openNext(GENESIS, 1);
        vm.warp(uint256(deadline) + 1);
        _expectEmit();
        emit FederatedLedger.RoundAbandoned(round, 3);
        ledger.abandonRound(round, 3);
        assertTrue(_state(round) == FederatedLedger.RoundState.Abandoned, "state Abandoned");
        assertEq(_versionCount(), 1, "no new version");

        (uint256 next,) = _openNext(GENESIS, 1);
        assertEq(next, round + 1, "next round opens");
    }

    function test_abandonRound_revertsUntilDeadlinePassed() public {
        (uint256 round, uint64 deadline) = _openNext(GENESIS, 1);
        bytes memory notPassed =
            abi.encodeWithSelector(FederatedLedger.LedgerDeadlineNotPassed.selector, round, deadline);
        vm.expectRevert(notPassed);
        ledger.abandonRound(round, 1);
        vm.warp(deadline);
        vm.expectRevert(notPassed);
        ledger.abandonRound(round, 1);
    }

    function test_abandonRound_revertsOnRoundNeverOpened() public {
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerRoundNotOpen.selector, 1));
        ledger.abandonRound(1, 1);
    }

    // ------------------------------------------------------------------ policy

    function test_setPolicy_emitsForTheNextRound() public {
        _expectEmit();
        emit FederatedLedger.PolicyChanged(1, POLICY_1);
        ledger.setPolicy(POLICY_1);

        (uint256 round,) = _openNext(GENESIS, 1);
        ledger.finalizeRound(round, MODEL_1, ROOT_1, 1, META_1);
        bytes32 policy2 = keccak256("policy 2");
        _expectEmit();
        emit FederatedLedger.PolicyChanged(2, policy2);
        ledger.setPolicy(policy2);
    }

    function test_setPolicy_allowedAfterAnAbandonedRound() public {
        (uint256 round, uint64 deadline) = _openNext(GENESIS, 1);
        vm.warp(uint256(deadline) + 1);
        ledger.abandonRound(round, 1);
        _expectEmit();
        emit FederatedLedger.PolicyChanged(2, POLICY_1);
        ledger.setPolicy(POLICY_1);
    }

    function test_setPolicy_revertsWhileARoundIsOpen() public {
        (uint256 round,) = _openNext(GENESIS, 1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerRoundStillOpen.selector, round));
        ledger.setPolicy(POLICY_1);
    }

    function test_setPolicy_revertsBeforeGenesis() public {
        FederatedLedger fresh = new FederatedLedger(0);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNoGenesis.selector));
        fresh.setPolicy(POLICY_1);
    }

    function test_setPolicy_revertsOnZeroHash() public {
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroHash.selector));
        ledger.setPolicy(bytes32(0));
    }

    function test_setPolicy_isAdminOnlyEvenForAggregators() public {
        ledger.setAggregator(OUTSIDER, true);
        vm.prank(OUTSIDER);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotAdmin.selector, OUTSIDER));
        ledger.setPolicy(POLICY_1);
    }

    // ------------------------------------------------------------------ EIP-712 domain

    function test_eip712Domain_describesTheSigningDomain() public view {
        (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        ) = ledger.eip712Domain();
        assertEq(uint8(fields), 0x0f, "name, version, chainId, verifyingContract");
        assertEq(keccak256(bytes(name)), keccak256("FederatedLedger"), "name");
        assertEq(keccak256(bytes(version)), keccak256("1"), "version");
        assertEq(chainId, block.chainid, "chainId");
        assertEq(verifyingContract, address(ledger), "verifyingContract");
        assertEq(salt, bytes32(0), "salt");
        assertEq(extensions.length, 0, "extensions");
    }

    // ------------------------------------------------------------------ access control

    function test_aggregatorFunctions_revertForNode() public {
        _assertAggregatorOnly(NODE_A);
    }

    function test_adminFunctions_revertForAggregatorThatIsNotAdmin() public {
        ledger.setAggregator(OUTSIDER, true);
        _assertAdminOnly(OUTSIDER, NODE_A);
    }
}

/// @notice Fuzz tests of the rules every input must obey.
contract FederatedLedgerFuzzTest is LedgerTestBase {
    function testFuzz_submit_exactlyOncePerOpenRound(
        address node,
        bytes32 first,
        bytes32 second,
        uint64 samples,
        uint8 rounds
    ) public {
        vm.assume(node != address(0));
        first = _nonZero(first);
        second = _nonZero(second);
        samples = uint64(_bound(samples, 1, type(uint64).max));
        if (!ledger.isNode(node)) ledger.registerNode(node);

        uint256 roundCount = _bound(rounds, 1, 4);
        for (uint256 i = 0; i < roundCount; ++i) {
            (uint256 round,) = _openNext(GENESIS, 1);
            _submit(node, round, first, samples);
            vm.prank(node);
            vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerAlreadySubmitted.selector, round, node));
            ledger.submitUpdate(round, second, samples);
            assertEq(ledger.submissionOf(round, node), first, "first submission kept");
            ledger.finalizeRound(round, keccak256(abi.encode("model", round)), ROOT_1, 1, META_1);
        }
    }

    function testFuzz_submit_unregisteredOrRevokedNeverSubmits(
        address caller,
        bool registerThenRevoke,
        bytes32 updateHash,
        uint64 samples
    ) public {
        vm.assume(caller != address(0));
        (uint256 round,) = _openNext(GENESIS, 1);
        if (ledger.isNode(caller)) {
            ledger.revokeNode(caller);
        } else if (registerThenRevoke) {
            ledger.registerNode(caller);
            ledger.revokeNode(caller);
        }
        vm.prank(caller);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerNotNode.selector, caller));
        ledger.submitUpdate(round, updateHash, samples);
        assertEq(ledger.submissionOf(round, caller), bytes32(0), "nothing stored");
    }

    function testFuzz_aggregatorFunctions_revertForNonAggregators(address caller) public {
        vm.assume(caller != address(this));
        _assertAggregatorOnly(caller);
    }

    function testFuzz_adminFunctions_revertForNonAdmins(address caller, address target) public {
        vm.assume(caller != address(this));
        _assertAdminOnly(caller, target);
    }

    function testFuzz_submit_revertsAfterDeadline(uint64 window, uint64 lateBy) public {
        uint64 deadline = uint64(START + _bound(window, 1, 365 days));
        ledger.openRound(1, GENESIS, deadline, 1);
        vm.warp(uint256(deadline) + _bound(lateBy, 1, 100 * 365 days));
        vm.prank(NODE_A);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerDeadlinePassed.selector, 1, deadline));
        ledger.submitUpdate(1, UPDATE_A, 1);
    }

    function testFuzz_submit_acceptedUpToDeadline(uint64 window, uint64 elapsed) public {
        uint64 deadline = uint64(START + _bound(window, 1, 365 days));
        ledger.openRound(1, GENESIS, deadline, 1);
        vm.warp(_bound(elapsed, START, deadline));
        _submit(NODE_A, 1, UPDATE_A, 1);
        assertEq(ledger.submissionOf(1, NODE_A), UPDATE_A, "accepted");
    }

    function testFuzz_finalize_needsMinUpdatesBeforeDeadlineAndOneAfter(
        uint32 minUpdates,
        uint32 includedCount,
        uint64 elapsed
    ) public {
        minUpdates = uint32(_bound(minUpdates, 1, type(uint32).max));
        (uint256 round, uint64 deadline) = _openNext(GENESIS, minUpdates);
        vm.warp(_bound(elapsed, START, uint256(deadline) + WINDOW));
        uint32 needed = block.timestamp > deadline ? 1 : minUpdates;

        if (includedCount < needed) {
            vm.expectRevert(
                abi.encodeWithSelector(FederatedLedger.LedgerTooFewUpdates.selector, round, includedCount, needed)
            );
            ledger.finalizeRound(round, MODEL_1, ROOT_1, includedCount, META_1);
            assertTrue(_state(round) == FederatedLedger.RoundState.Open, "still open");
        } else {
            _expectEmit();
            emit FederatedLedger.ModelCommitted(round, MODEL_1, GENESIS, 1, ROOT_1, includedCount, META_1);
            ledger.finalizeRound(round, MODEL_1, ROOT_1, includedCount, META_1);
            assertTrue(_state(round) == FederatedLedger.RoundState.Finalized, "finalized");
        }
    }

    function testFuzz_finalize_leavesRoundClosedToSubmissions(address node, uint64 elapsed, bytes32 updateHash)
        public
    {
        vm.assume(node != address(0));
        if (!ledger.isNode(node)) ledger.registerNode(node);
        (uint256 round, uint64 deadline) = _openNext(GENESIS, 1);
        ledger.finalizeRound(round, MODEL_1, ROOT_1, 1, META_1);
        vm.warp(_bound(elapsed, START, deadline));
        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerRoundNotOpen.selector, round));
        ledger.submitUpdate(round, _nonZero(updateHash), 1);
    }

    /// @dev Each bit of `plan` picks finalize (1) or abandon (0) for one round.
    function testFuzz_versionCount_incrementsByExactlyOnePerFinalize(uint256 plan, uint8 rounds) public {
        uint256 roundCount = _bound(rounds, 1, 24);
        bytes32 head = GENESIS;
        uint64 expectedVersions = 1;
        for (uint256 i = 0; i < roundCount; ++i) {
            (uint256 round, uint64 deadline) = _openNext(head, 1);
            vm.warp(uint256(deadline) + 1);
            if ((plan >> i) & 1 == 1) {
                bytes32 model = keccak256(abi.encode("model", round));
                ledger.finalizeRound(round, model, ROOT_1, 1, META_1);
                (, uint64 version,,) = ledger.modelOf(model);
                assertEq(version, expectedVersions, "version number");
                head = model;
                ++expectedVersions;
            } else {
                ledger.abandonRound(round, 1);
            }
            (uint64 lastRound, uint64 versionCount) = ledger.counters();
            assertEq(lastRound, round, "lastRound");
            assertEq(versionCount, expectedVersions, "versionCount");
        }
    }
}

/// @notice verifyInclusion against trees built here with the scheme the Python side uses:
///         leaves = update hashes deduplicated and sorted ascending; level 0 = sha256(0x00 ‖ h);
///         next level pairs (i, i+1) as sha256(0x01 ‖ min ‖ max); an odd last node moves up unchanged.
contract FederatedLedgerMerkleTest is LedgerTestBase {
    function test_verifyInclusion_matchesReferenceVector() public view {
        // Reference vector, also computed by a plain Python (hashlib) implementation of the scheme:
        // updates = [sha256(b"update-1"), ..., sha256(b"update-5")].
        bytes32 root = 0x0b0584e04e71fec9e155c4eb0d39d40156e48b23cc069e5ce812c0d9e134dadf;
        bytes32[] memory updates = new bytes32[](5);
        for (uint256 k = 0; k < 5; ++k) {
            updates[k] = sha256(abi.encodePacked("update-", bytes1(uint8(0x31 + k))));
        }
        assertEq(updates[0], 0xbf411db9a172dfea83a4de5e271392cbeac2eeca58271266e8248fd9f3b931d6, "update-1");
        assertEq(_root(updates), root, "root built here");

        bytes32[] memory proof = new bytes32[](3);
        proof[0] = 0xc9251e906c6dd456126afe4644271e266abded644e48cb9baa11fd2faec1b4d3;
        proof[1] = 0x233b0f4bbefe706b24a96b2504bc103488e601583c34c82768cc0a790e6cc9a5;
        proof[2] = 0x7769285b5f988bd7fecdbf3e6b80cd0a61b3fa23a1370711f78bec02821fc21d;
        assertTrue(ledger.verifyInclusion(root, updates[0], proof), "update-1 proof");

        // update-5 is the largest hash: the odd node carried up two levels, so its proof has one sibling.
        bytes32[] memory carried = new bytes32[](1);
        carried[0] = 0xb6909e7e16b02ec9da7689ff51500dc683eaf8b160bd3c9deeedd64baa7ce683;
        assertTrue(ledger.verifyInclusion(root, updates[4], carried), "update-5 proof");
        assertTrue(!ledger.verifyInclusion(root, updates[3], carried), "wrong leaf for proof");
    }

    function test_verifyInclusion_singleLeafRootIsItsLeafNode() public view {
        bytes32 root = sha256(abi.encodePacked(bytes1(0x00), UPDATE_A));
        assertTrue(ledger.verifyInclusion(root, UPDATE_A, new bytes32[](0)), "single leaf");
        assertTrue(!ledger.verifyInclusion(UPDATE_A, UPDATE_A, new bytes32[](0)), "raw hash is not a leaf node");
    }

    function test_verifyInclusion_innerNodeCannotPassAsUpdate() public view {
        bytes32[] memory updates = new bytes32[](2);
        updates[0] = UPDATE_A;
        updates[1] = UPDATE_B;
        bytes32 root = _root(updates);
        assertTrue(!ledger.verifyInclusion(root, root, new bytes32[](0)), "root as leaf");
    }

    function testFuzz_verifyInclusion_acceptsEveryLeafRejectsTampering(uint256 seed, uint8 size, uint8 bit)
        public
        view
    {
        uint256 n = _bound(size, 1, 48);
        // Draw from n / 2 + 1 values so most sets hold duplicates, which the scheme drops.
        bytes32[] memory updates = new bytes32[](n);
        for (uint256 i = 0; i < n; ++i) {
            updates[i] = sha256(abi.encode(seed, i % (n / 2 + 1)));
        }
        bytes32[] memory leaves = _sortedUnique(updates);
        bytes32[][] memory levels = _levels(leaves);
        bytes32 root = levels[levels.length - 1][0];

        for (uint256 i = 0; i < leaves.length; ++i) {
            bytes32[] memory proof = _proof(levels, i);
            assertTrue(ledger.verifyInclusion(root, leaves[i], proof), "genuine proof");

            bytes32 tampered = leaves[i] ^ bytes32(uint256(1) << bit);
            assertTrue(!ledger.verifyInclusion(root, tampered, proof), "tampered leaf");
            if (proof.length > 0) {
                proof[i % proof.length] ^= bytes32(uint256(1) << bit);
                assertTrue(!ledger.verifyInclusion(root, leaves[i], proof), "tampered proof");
            }
        }
    }

    // ------------------------------------------------------------------ reference tree

    function _root(bytes32[] memory updates) internal pure returns (bytes32) {
        bytes32[][] memory levels = _levels(_sortedUnique(updates));
        return levels[levels.length - 1][0];
    }

    /// @dev Insertion sort then drop repeats: fine for the few dozen leaves a test builds.
    function _sortedUnique(bytes32[] memory values) internal pure returns (bytes32[] memory unique) {
        bytes32[] memory sorted = new bytes32[](values.length);
        for (uint256 i = 0; i < values.length; ++i) {
            bytes32 v = values[i];
            uint256 j = i;
            while (j > 0 && sorted[j - 1] > v) {
                sorted[j] = sorted[j - 1];
                --j;
            }
            sorted[j] = v;
        }
        unique = new bytes32[](sorted.length);
        uint256 count = 0;
        for (uint256 i = 0; i < sorted.length; ++i) {
            if (count == 0 || unique[count - 1] != sorted[i]) unique[count++] = sorted[i];
        }
        assembly ("memory-safe") {
            mstore(unique, count)
        }
    }

    /// @dev levels[0] are the leaf nodes; the last level holds the root alone.
    function _levels(bytes32[] memory leaves) internal pure returns (bytes32[][] memory levels) {
        uint256 depth = 1;
        for (uint256 width = leaves.length; width > 1; width = (width + 1) / 2) ++depth;
        levels = new bytes32[][](depth);
        levels[0] = new bytes32[](leaves.length);
        for (uint256 i = 0; i < leaves.length; ++i) {
            levels[0][i] = sha256(abi.encodePacked(bytes1(0x00), leaves[i]));
        }
        for (uint256 d = 1; d < depth; ++d) {
            bytes32[] memory below = levels[d - 1];
            bytes32[] memory level = new bytes32[]((below.length + 1) / 2);
            for (uint256 i = 0; i < level.length; ++i) {
                uint256 left = 2 * i;
                if (left + 1 == below.length) {
                    level[i] = below[left];
                } else {
                    (bytes32 a, bytes32 b) = below[left] < below[left + 1]
                        ? (below[left], below[left + 1])
                        : (below[left + 1], below[left]);
                    level[i] = sha256(abi.encodePacked(bytes1(0x01), a, b));
                }
            }
            levels[d] = level;
        }
    }

    /// @dev Siblings bottom-up, skipping levels where the node was carried up without one.
    function _proof(bytes32[][] memory levels, uint256 index) internal pure returns (bytes32[] memory proof) {
        proof = new bytes32[](levels.length);
        uint256 count = 0;
        for (uint256 d = 0; d + 1 < levels.length; ++d) {
            uint256 sibling = index ^ 1;
            if (sibling < levels[d].length) proof[count++] = levels[d][sibling];
            index /= 2;
        }
        assembly ("memory-safe") {
            mstore(proof, count)
        }
    }
}

/// @notice Drives the ledger with random sequences of calls and checks each outcome, success or the exact
///         revert, against a plain model of the rules. Every call it makes must match the model, so the
///         campaign runs with fail_on_revert: a mismatch anywhere fails the invariant run. The ledger has an
///         attestation quorum, three auditors that come and go, and nodes whose keys the handler holds, so
///         their updates also arrive in relayed batches.
contract LedgerHandler {
    error OutcomeMismatch(string call, bytes expected, bool succeeded, bytes returned);

    struct RoundModel {
        FederatedLedger.RoundState state;
        uint64 deadline;
        uint32 minUpdates;
    }

    enum Verdict {
        None,
        Ok,
        Failed,
        Resolved
    }

    /// @dev 1, so that a campaign's rounds keep building on new heads; the fuzz tests cover larger quorums.
    uint8 public constant QUORUM = 1;
    uint256 internal constant NODE_KEY_BASE = 0xA1;

    FederatedLedger public immutable ledger;
    address[4] internal _nodes;
    address[3] internal _auditors = [address(0xAD1), address(0xAD2), address(0xAD3)];

    uint256 public now_ = 1_700_000_000;
    uint64 public lastRound;
    uint64 public versionCount;
    bytes32 public head;
    bytes32[] internal _versions;
    mapping(bytes32 modelHash => bool) public isCommitted;
    mapping(address node => bool) public isNode;
    mapping(address auditor => bool) public isAuditor;
    mapping(uint256 round => RoundModel) public rounds;
    mapping(uint256 round => mapping(address node => bytes32)) public submissionOf;
    mapping(uint256 round => mapping(address node => uint16)) public rejectionOf;
    mapping(bytes32 modelHash => mapping(address auditor => Verdict)) public verdictOf;
    /// @dev How many calls succeeded, to see that a campaign reaches past the guards.
    uint256 public acceptedSubmissions;
    uint256 public relayedSubmissions;
    uint256 public acceptedAttestations;
    uint256 public finalizedRounds;

    constructor() {
        vm.warp(now_);
        ledger = new FederatedLedger(QUORUM);
        head = keccak256("handler genesis");
        ledger.commitGenesis(head, bytes32(0));
        _commitVersion(head);
        // Everyone starts in role, so a campaign gets far early; toggles take roles away and back.
        for (uint256 i = 0; i < 4; ++i) {
            _nodes[i] = vm.addr(NODE_KEY_BASE + i);
            ledger.registerNode(_nodes[i]);
            isNode[_nodes[i]] = true;
        }
        for (uint256 i = 0; i < 3; ++i) {
            ledger.setAuditor(_auditors[i], true);
            isAuditor[_auditors[i]] = true;
        }
    }

    function nodeCount() external pure returns (uint256) {
        return 4;
    }

    function nodeAt(uint256 i) external view returns (address) {
        return _nodes[i];
    }

    function auditorCount() external pure returns (uint256) {
        return 3;
    }

    function auditorAt(uint256 i) external view returns (address) {
        return _auditors[i];
    }

    function versionAt(uint256 i) external view returns (bytes32) {
        return _versions[i];
    }

    /// @dev What the quorum gate counts for `modelHash`: ok verdicts by current auditors, unresolved failures.
    function gateCounts(bytes32 modelHash) public view returns (uint256 currentOk, uint256 unresolved) {
        for (uint256 i = 0; i < 3; ++i) {
            Verdict verdict = verdictOf[modelHash][_auditors[i]];
            if (verdict == Verdict.Ok && isAuditor[_auditors[i]]) ++currentOk;
            if (verdict == Verdict.Failed) ++unresolved;
        }
    }

    // ------------------------------------------------------------------ actions

    function warp(uint32 seconds_) external {
        now_ += seconds_ % (2 hours);
        vm.warp(now_);
    }

    function toggleNode(uint8 nodeSeed) external {
        address node = _nodes[nodeSeed % 4];
        vm.warp(now_);
        if (isNode[node]) ledger.revokeNode(node);
        else ledger.registerNode(node);
        isNode[node] = !isNode[node];
    }

    function openNext(uint32 windowSeed, uint8 minSeed) external {
        vm.warp(now_);
        uint256 round = uint256(lastRound) + 1;
        uint64 deadline = uint64(now_ + 1 + windowSeed % (3 hours));
        uint32 minUpdates = uint32(1 + minSeed % 4);
        bytes memory expected;
        (uint256 currentOk, uint256 unresolved) = gateCounts(head);
        if (lastRound != 0 && rounds[lastRound].state == FederatedLedger.RoundState.Open) {
            expected = abi.encodeWithSelector(FederatedLedger.LedgerRoundStillOpen.selector, lastRound);
        } else if (currentOk < QUORUM || unresolved != 0) {
            expected = abi.encodeWithSelector(
                FederatedLedger.LedgerBaseNotAttested.selector, head, currentOk, QUORUM, unresolved
            );
        }
        (bool ok, bytes memory returned) =
            address(ledger).call(abi.encodeCall(FederatedLedger.openRound, (round, head, deadline, minUpdates)));
        _check("openRound", expected, ok, returned);
        if (ok) {
            lastRound = uint64(round);
            rounds[round] = RoundModel(FederatedLedger.RoundState.Open, deadline, minUpdates);
        }
    }

    /// @dev `roundBack` aims some submissions at earlier (closed) rounds or at round 0.
    function submit(uint8 nodeSeed, uint8 roundBack, bytes32 updateHash, uint64 numSamples) external {
        vm.warp(now_);
        address node = _nodes[nodeSeed % 4];
        uint256 round = lastRound > roundBack % 3 ? lastRound - roundBack % 3 : 0;
        updateHash = updateHash == bytes32(0) ? bytes32(uint256(1)) : updateHash;
        numSamples = numSamples == 0 ? 1 : numSamples;
        RoundModel memory r = rounds[round];
        bytes memory expected;
        if (!isNode[node]) {
            expected = abi.encodeWithSelector(FederatedLedger.LedgerNotNode.selector, node);
        } else if (r.state != FederatedLedger.RoundState.Open) {
            expected = abi.encodeWithSelector(FederatedLedger.LedgerRoundNotOpen.selector, round);
        } else if (now_ > r.deadline) {
            expected = abi.encodeWithSelector(FederatedLedger.LedgerDeadlinePassed.selector, round, r.deadline);
        } else if (submissionOf[round][node] != bytes32(0)) {
            expected = abi.encodeWithSelector(FederatedLedger.LedgerAlreadySubmitted.selector, round, node);
        }
        vm.prank(node);
        (bool ok, bytes memory returned) =
            address(ledger).call(abi.encodeCall(FederatedLedger.submitUpdate, (round, updateHash, numSamples)));
        _check("submitUpdate", expected, ok, returned);
        if (ok) {
            submissionOf[round][node] = updateHash;
            ++acceptedSubmissions;
        }
    }

    function reject(uint8 nodeSeed, uint16 reasonCode) external {
        vm.warp(now_);
        address node = _nodes[nodeSeed % 4];
        uint256 round = lastRound;
        reasonCode = reasonCode == 0 ? 1 : reasonCode;
        bytes memory expected;
        if (rounds[round].state != FederatedLedger.RoundState.Open) {
            expected = abi.encodeWithSelector(FederatedLedger.LedgerRoundNotOpen.selector, round);
        } else if (submissionOf[round][node] == bytes32(0)) {
            expected = abi.encodeWithSelector(FederatedLedger.LedgerNoSubmission.selector, round, node);
        } else if (rejectionOf[round][node] != 0) {
            expected = abi.encodeWithSelector(FederatedLedger.LedgerAlreadyRejected.selector, round, node);
        }
        (bool ok, bytes memory returned) =
            address(ledger).call(abi.encodeCall(FederatedLedger.rejectUpdate, (round, node, reasonCode)));
        _check("rejectUpdate", expected, ok, returned);
        if (ok) rejectionOf[round][node] = reasonCode;
    }

    function finalize(uint8 countSeed) external {
        vm.warp(now_);
        uint256 round = lastRound;
        uint32 includedCount = countSeed % 6;
        bytes32 model = keccak256(abi.encode("handler model", round, versionCount));
        RoundModel memory r = rounds[round];
        uint32 needed = now_ > r.deadline ? 1 : r.minUpdates;
        bytes memory expected;
        if (r.state != FederatedLedger.RoundState.Open) {
            expected = abi.encodeWithSelector(FederatedLedger.LedgerRoundNotOpen.selector, round);
        } else if (includedCount < needed) {
            expected =
                abi.encodeWithSelector(FederatedLedger.LedgerTooFewUpdates.selector, round, includedCount, needed);
        }
        (bool ok, bytes memory returned) = address(ledger).call(
            abi.encodeCall(FederatedLedger.finalizeRound, (round, model, bytes32(uint256(1)), includedCount, 0))
        );
        _check("finalizeRound", expected, ok, returned);
        if (ok) {
            rounds[round].state = FederatedLedger.RoundState.Finalized;
            head = model;
            _commitVersion(model);
            ++finalizedRounds;
        }
    }

    function abandon(uint16 reasonCode) external {
        vm.warp(now_);
        uint256 round = lastRound;
        RoundModel memory r = rounds[round];
        bytes memory expected;
        if (r.state != FederatedLedger.RoundState.Open) {
            expected = abi.encodeWithSelector(FederatedLedger.LedgerRoundNotOpen.selector, round);
        } else if (now_ <= r.deadline) {
            expected = abi.encodeWithSelector(FederatedLedger.LedgerDeadlineNotPassed.selector, round, r.deadline);
        }
        (bool ok, bytes memory returned) =
            address(ledger).call(abi.encodeCall(FederatedLedger.abandonRound, (round, reasonCode)));
        _check("abandonRound", expected, ok, returned);
        if (ok) rounds[round].state = FederatedLedger.RoundState.Abandoned;
    }

    function toggleAuditor(uint8 auditorSeed) external {
        vm.warp(now_);
        address auditor = _auditors[auditorSeed % 3];
        ledger.setAuditor(auditor, !isAuditor[auditor]);
        isAuditor[auditor] = !isAuditor[auditor];
    }

    /// @dev Mostly the head, sometimes an older version, sometimes a hash never committed; mostly ok.
    function attest(uint8 auditorSeed, uint8 versionSeed, uint8 verdictSeed) external {
        vm.warp(now_);
        bool verdictOk = verdictSeed % 4 != 0;
        address auditor = _auditors[auditorSeed % 3];
        uint256 pick = versionSeed % 8;
        bytes32 modelHash = pick < 5
            ? head
            : pick < 7 ? _versions[versionSeed % _versions.length] : keccak256(abi.encode("never committed", versionSeed));
        bytes memory expected;
        if (!isAuditor[auditor]) {
            expected = abi.encodeWithSelector(FederatedLedger.LedgerNotAuditor.selector, auditor);
        } else if (!isCommitted[modelHash]) {
            expected = abi.encodeWithSelector(FederatedLedger.LedgerModelNotCommitted.selector, modelHash);
        } else if (verdictOf[modelHash][auditor] != Verdict.None) {
            expected = abi.encodeWithSelector(FederatedLedger.LedgerAlreadyAttested.selector, modelHash, auditor);
        }
        vm.prank(auditor);
        (bool ok, bytes memory returned) = address(ledger).call(
            abi.encodeCall(FederatedLedger.attestVersion, (modelHash, verdictOk, keccak256("handler report")))
        );
        _check("attestVersion", expected, ok, returned);
        if (ok) {
            verdictOf[modelHash][auditor] = verdictOk ? Verdict.Ok : Verdict.Failed;
            ++acceptedAttestations;
        }
    }

    function resolve(uint8 auditorSeed) external {
        vm.warp(now_);
        address auditor = _auditors[auditorSeed % 3];
        bytes memory expected;
        if (verdictOf[head][auditor] != Verdict.Failed) {
            expected = abi.encodeWithSelector(FederatedLedger.LedgerNoFailingAttestation.selector, head, auditor);
        }
        (bool ok, bytes memory returned) = address(ledger).call(
            abi.encodeCall(FederatedLedger.resolveAttestation, (head, auditor, keccak256("handler resolution")))
        );
        _check("resolveAttestation", expected, ok, returned);
        if (ok) verdictOf[head][auditor] = Verdict.Resolved;
    }

    /// @dev A relayed batch of the nodes picked by `nodeMask`. `defect` 1 repeats the first record at the
    ///      end; 2 has the last node sign for the round after; `roundBack` aims at earlier rounds like submit.
    function submitBatch(uint8 nodeMask, uint8 roundBack, uint8 defect, bytes32 updateHash, uint64 numSamples)
        external
    {
        vm.warp(now_);
        uint256 round = lastRound > roundBack % 3 ? lastRound - roundBack % 3 : 0;
        updateHash = updateHash == bytes32(0) ? bytes32(uint256(1)) : updateHash;
        numSamples = numSamples == 0 ? 1 : numSamples;
        nodeMask = nodeMask % 16 == 0 ? 1 : nodeMask % 16;

        uint256[] memory picked = new uint256[](5);
        uint256 count;
        for (uint256 i = 0; i < 4; ++i) {
            if ((nodeMask >> i) & 1 == 1) picked[count++] = i;
        }
        if (defect % 3 == 1) picked[count++] = picked[0];
        bytes memory batch;
        for (uint256 k = 0; k < count; ++k) {
            uint256 signedRound = defect % 3 == 2 && k == count - 1 ? round + 1 : round;
            bytes32 digest = submissionDigest(block.chainid, address(ledger), signedRound, updateHash, numSamples);
            (bytes32 r, bytes32 vs) = signCompact(NODE_KEY_BASE + picked[k], digest);
            batch = bytes.concat(batch, abi.encodePacked(updateHash, numSamples, r, vs));
        }

        (bytes memory expected, address[] memory recorded) = _expectBatch(round, batch, picked, count);
        (bool ok, bytes memory returned) =
            address(ledger).call(abi.encodeCall(FederatedLedger.submitUpdatesBySig, (round, batch)));
        _check("submitUpdatesBySig", expected, ok, returned);
        if (ok) {
            if (keccak256(returned) != keccak256(abi.encode(recorded.length))) {
                revert OutcomeMismatch("submitUpdatesBySig count", abi.encode(recorded.length), ok, returned);
            }
            for (uint256 k = 0; k < recorded.length; ++k) {
                submissionOf[round][recorded[k]] = updateHash;
            }
            relayedSubmissions += recorded.length;
        }
    }

    /// @dev The model of a batch: round checks, then each record in order (a signer recovered from the
    ///      signature over the batch's round, so a record signed for another round names someone else).
    function _expectBatch(uint256 round, bytes memory batch, uint256[] memory picked, uint256 count)
        internal
        view
        returns (bytes memory expected, address[] memory recorded)
    {
        RoundModel memory r = rounds[round];
        recorded = new address[](count);
        uint256 recordedCount;
        if (r.state != FederatedLedger.RoundState.Open) {
            return (abi.encodeWithSelector(FederatedLedger.LedgerRoundNotOpen.selector, round), new address[](0));
        }
        if (now_ > r.deadline) {
            return (
                abi.encodeWithSelector(FederatedLedger.LedgerDeadlinePassed.selector, round, r.deadline),
                new address[](0)
            );
        }
        for (uint256 k = 0; k < count; ++k) {
            address signer = _signerOf(round, batch, k);
            address node = _nodes[picked[k]];
            if (signer != node || !isNode[node]) {
                return (
                    abi.encodeWithSelector(FederatedLedger.LedgerSignerNotNode.selector, k, signer), new address[](0)
                );
            }
            bool seen = submissionOf[round][node] != bytes32(0);
            for (uint256 j = 0; j < recordedCount; ++j) {
                if (recorded[j] == node) seen = true;
            }
            if (!seen) recorded[recordedCount++] = node;
        }
        assembly ("memory-safe") {
            mstore(recorded, recordedCount)
        }
    }

    function _signerOf(uint256 round, bytes memory batch, uint256 index) internal view returns (address) {
        bytes32 updateHash;
        uint64 numSamples;
        bytes32 r;
        bytes32 vs;
        assembly ("memory-safe") {
            let record := add(add(batch, 0x20), mul(index, 104))
            updateHash := mload(record)
            numSamples := shr(192, mload(add(record, 0x20)))
            r := mload(add(record, 0x28))
            vs := mload(add(record, 0x48))
        }
        bytes32 digest = submissionDigest(block.chainid, address(ledger), round, updateHash, numSamples);
        uint256 s = uint256(vs) & ((1 << 255) - 1);
        return ecrecover(digest, uint8(uint256(vs) >> 255) + 27, r, bytes32(s));
    }

    function _commitVersion(bytes32 modelHash) internal {
        _versions.push(modelHash);
        isCommitted[modelHash] = true;
        versionCount = uint64(_versions.length);
    }

    function _check(string memory call, bytes memory expected, bool ok, bytes memory returned) internal pure {
        bool matches = expected.length == 0 ? ok : (!ok && keccak256(returned) == keccak256(expected));
        if (!matches) revert OutcomeMismatch(call, expected, ok, returned);
    }
}

/// @notice Stateful invariants: after any sequence of handler calls the ledger's storage equals the model's.
contract FederatedLedgerInvariantTest is LedgerTestBase {
    LedgerHandler internal handler;

    function setUp() public override {
        handler = new LedgerHandler();
        ledger = handler.ledger();
    }

    /// @dev Forge fuzzes only the handler (not the ledger directly).
    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    function invariant_countersMatchModel() public view {
        (uint64 lastRound, uint64 versionCount) = ledger.counters();
        assertEq(lastRound, handler.lastRound(), "lastRound");
        assertEq(versionCount, handler.versionCount(), "versionCount");
        (bool committed,,,) = ledger.modelOf(handler.head());
        assertTrue(committed, "head is committed");
    }

    function invariant_roundsSubmissionsAndRejectionsMatchModel() public view {
        uint256 lastRound = handler.lastRound();
        uint256 nodes = handler.nodeCount();
        for (uint256 round = 0; round <= lastRound; ++round) {
            (FederatedLedger.RoundState wantState, uint64 wantDeadline, uint32 wantMin) = handler.rounds(round);
            (, uint64 deadline, uint32 minUpdates, FederatedLedger.RoundState state) = ledger.getRound(round);
            assertTrue(state == wantState, "round state");
            assertEq(deadline, wantDeadline, "deadline");
            assertEq(minUpdates, wantMin, "minUpdates");
            for (uint256 i = 0; i < nodes; ++i) {
                address node = handler.nodeAt(i);
                assertEq(ledger.submissionOf(round, node), handler.submissionOf(round, node), "submission");
                assertEq(ledger.rejectionOf(round, node), handler.rejectionOf(round, node), "rejection");
            }
        }
    }

    function invariant_rolesMatchModel() public view {
        for (uint256 i = 0; i < handler.nodeCount(); ++i) {
            address node = handler.nodeAt(i);
            assertTrue(ledger.isNode(node) == handler.isNode(node), "node role");
        }
        for (uint256 i = 0; i < handler.auditorCount(); ++i) {
            address auditor = handler.auditorAt(i);
            assertTrue(ledger.isAuditor(auditor) == handler.isAuditor(auditor), "auditor role");
        }
    }

    function invariant_attestationsMatchModel() public view {
        uint256 versions = handler.versionCount();
        for (uint256 v = 0; v < versions; ++v) {
            bytes32 modelHash = handler.versionAt(v);
            uint256 ok;
            uint256 failed;
            uint256 unresolved;
            for (uint256 i = 0; i < handler.auditorCount(); ++i) {
                address auditor = handler.auditorAt(i);
                LedgerHandler.Verdict verdict = handler.verdictOf(modelHash, auditor);
                (bool attested, bool attestedOk, bool resolved) = ledger.attestationOf(modelHash, auditor);
                assertEq(attested, verdict != LedgerHandler.Verdict.None, "attested");
                assertEq(attestedOk, verdict == LedgerHandler.Verdict.Ok, "verdict");
                assertEq(resolved, verdict == LedgerHandler.Verdict.Resolved, "resolved");
                if (verdict == LedgerHandler.Verdict.Ok) ++ok;
                if (verdict == LedgerHandler.Verdict.Failed || verdict == LedgerHandler.Verdict.Resolved) ++failed;
                if (verdict == LedgerHandler.Verdict.Failed) ++unresolved;
            }
            (uint256 currentOk,) = handler.gateCounts(modelHash);
            (uint256 okCount, uint256 currentOkCount, uint256 failedCount, uint256 unresolvedCount) =
                ledger.attestationCounts(modelHash);
            assertEq(okCount, ok, "ok count");
            assertEq(currentOkCount, currentOk, "current ok count");
            assertEq(failedCount, failed, "failed count");
            assertEq(unresolvedCount, unresolved, "unresolved count");
        }
    }
}
