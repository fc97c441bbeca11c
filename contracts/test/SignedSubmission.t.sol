// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {FederatedLedger} from "../FederatedLedger.sol";
import {LedgerTestBase} from "./LedgerTestBase.sol";
import {Vm, vm} from "./Vm.sol";

/// @dev The default fixture plus three nodes whose keys the tests hold, and a round open on genesis.
abstract contract SignedSubmissionTestBase is LedgerTestBase {
    /// @dev secp256k1's group order n and n / 2.
    uint256 internal constant CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    uint256 internal constant HALF_CURVE_ORDER = CURVE_ORDER / 2;
    uint256 internal constant S_MASK = (1 << 255) - 1;

    uint256 internal constant KEY_C = 0xC0C0;
    uint256 internal constant KEY_D = 0xD0D0;
    uint256 internal constant KEY_E = 0xE0E0;
    uint256 internal constant KEY_OUTSIDER = 0x0BAD;
    address internal nodeC;
    address internal nodeD;
    address internal nodeE;
    uint256 internal round;
    uint64 internal deadline;

    function setUp() public virtual override {
        super.setUp();
        nodeC = vm.addr(KEY_C);
        nodeD = vm.addr(KEY_D);
        nodeE = vm.addr(KEY_E);
        ledger.registerNode(nodeC);
        ledger.registerNode(nodeD);
        ledger.registerNode(nodeE);
        (round, deadline) = _openNext(GENESIS, 1);
    }

    function _keyFrom(uint256 seed) internal pure returns (uint256) {
        return _bound(seed, 1, CURVE_ORDER - 1);
    }

    function _pack(bytes32 updateHash, uint64 numSamples, bytes32 r, bytes32 vs) internal pure returns (bytes memory) {
        return abi.encodePacked(updateHash, numSamples, r, vs);
    }

    function _sigOf(bytes memory record) internal pure returns (bytes32 r, bytes32 vs) {
        assembly ("memory-safe") {
            r := mload(add(record, 0x48)) // 0x20 length word + 40 bytes of hash and samples
            vs := mload(add(record, 0x68))
        }
    }

    /// @dev What the ledger must revert with for a record at `index` whose content is (updateHash,
    ///      numSamples) under this ledger's domain, computed here from the spec; also returns the signer.
    function _expectedRejection(uint256 index, bytes32 updateHash, uint64 numSamples, bytes32 r, bytes32 vs)
        internal
        view
        returns (bytes memory err, address signer)
    {
        bytes32 digest = _submissionDigest(block.chainid, address(ledger), round, updateHash, numSamples);
        uint256 s = uint256(vs) & S_MASK;
        if (s <= HALF_CURVE_ORDER) signer = ecrecover(digest, uint8(uint256(vs) >> 255) + 27, r, bytes32(s));
        err = signer == address(0)
            ? abi.encodeWithSelector(FederatedLedger.LedgerInvalidSignature.selector, index)
            : abi.encodeWithSelector(FederatedLedger.LedgerSignerNotNode.selector, index, signer);
    }

    function _assertNothingRecorded() internal view {
        assertEq(ledger.submissionOf(round, nodeC), bytes32(0), "node C");
        assertEq(ledger.submissionOf(round, nodeD), bytes32(0), "node D");
        assertEq(ledger.submissionOf(round, nodeE), bytes32(0), "node E");
    }
}

/// @notice submitUpdatesBySig: EIP-712 digests, recording, skipping, and every refusal with its arguments.
contract FederatedLedgerSignedSubmissionTest is SignedSubmissionTestBase {
    // ------------------------------------------------------------------ the digest

    function test_hashSubmission_matchesTheSpec() public view {
        assertEq(
            ledger.hashSubmission(round, UPDATE_A, 42),
            _submissionDigest(block.chainid, address(ledger), round, UPDATE_A, 42),
            "digest"
        );
    }

    /// @dev Vector from eth_account 0.14 (encode_typed_data + sign_message) with key 0xC0FFEE, chain id
    ///      31337, verifyingContract 0x5FbDB2315678afecb367f032d93F642f64180aa3, round 1,
    ///      updateHash sha256(b"update-1"), numSamples 42. Both sides sign deterministically (RFC 6979).
    function test_submissionDigest_matchesEthAccount() public pure {
        bytes32 updateHash = sha256("update-1");
        bytes32 digest =
            _submissionDigest(31337, 0x5FbDB2315678afecb367f032d93F642f64180aa3, 1, updateHash, 42);
        assertEq(digest, 0x7c4957a82d7bc3bb6acfc8c63e825b8ef92c1e7f865949ddeaf9231807cff12f, "digest");
        (bytes32 r, bytes32 vs) = _signCompact(0xC0FFEE, digest);
        assertEq(r, 0x217d7b0281890dcda1c67f921dd3e78021232cb164b1fe98dd2ca2122fbeeb28, "r");
        assertEq(vs, 0xe16ce7d460b7609992b70fffd1c35b20aa54c4357539300ce16f8e07fe79621d, "vs (v = 28)");
        assertEq(vm.addr(0xC0FFEE), 0xF5A5E415061470A8b9137959180901aEa72450a4, "signer");
    }

    function test_hashSubmission_followsTheChainId() public {
        vm.chainId(1);
        assertEq(
            ledger.hashSubmission(round, UPDATE_A, 42),
            _submissionDigest(1, address(ledger), round, UPDATE_A, 42),
            "recomputed for the new chain id"
        );
    }

    // ------------------------------------------------------------------ recording

    function test_submitUpdatesBySig_recordsEachLikeSubmitUpdate() public {
        bytes memory batch = bytes.concat(
            _record(KEY_C, round, UPDATE_A, 10), _record(KEY_D, round, UPDATE_B, 20), _record(KEY_E, round, MODEL_1, 30)
        );
        _expectEmit();
        emit FederatedLedger.UpdateSubmitted(round, nodeC, UPDATE_A, 10);
        _expectEmit();
        emit FederatedLedger.UpdateSubmitted(round, nodeD, UPDATE_B, 20);
        _expectEmit();
        emit FederatedLedger.UpdateSubmitted(round, nodeE, MODEL_1, 30);
        vm.prank(OUTSIDER); // any account relays
        uint256 submitted = ledger.submitUpdatesBySig(round, batch);

        assertEq(submitted, 3, "submitted");
        assertEq(ledger.submissionOf(round, nodeC), UPDATE_A, "node C");
        assertEq(ledger.submissionOf(round, nodeD), UPDATE_B, "node D");
        assertEq(ledger.submissionOf(round, nodeE), MODEL_1, "node E");
    }

    function test_submitUpdatesBySig_logIsByteForByteTheDirectOne() public {
        vm.recordLogs();
        vm.prank(nodeC);
        ledger.submitUpdate(round, UPDATE_A, 77);
        Vm.Log[] memory direct = vm.getRecordedLogs();

        // Same state on a second ledger, where the update arrives through a relayer.
        FederatedLedger directLedger = ledger;
        setUp();
        assertTrue(address(ledger) != address(directLedger), "fresh ledger");
        vm.getRecordedLogs(); // drop the fixture's own events
        ledger.submitUpdatesBySig(round, _record(KEY_C, round, UPDATE_A, 77));
        Vm.Log[] memory relayed = vm.getRecordedLogs();

        assertEq(direct.length, 1, "one direct log");
        assertEq(relayed.length, 1, "one relayed log");
        assertEq(keccak256(abi.encode(direct[0].topics)), keccak256(abi.encode(relayed[0].topics)), "topics");
        assertEq(keccak256(direct[0].data), keccak256(relayed[0].data), "data");
    }

    function test_submitUpdatesBySig_skipsNodesThatAlreadySubmitted() public {
        vm.prank(nodeC);
        ledger.submitUpdate(round, UPDATE_A, 1);

        vm.recordLogs();
        uint256 submitted = ledger.submitUpdatesBySig(
            round, bytes.concat(_record(KEY_C, round, UPDATE_B, 2), _record(KEY_D, round, UPDATE_B, 3))
        );
        Vm.Log[] memory logs = vm.getRecordedLogs();

        assertEq(submitted, 1, "only node D recorded");
        assertEq(logs.length, 1, "no event for the skipped record");
        assertEq(logs[0].topics[2], bytes32(uint256(uint160(nodeD))), "event is node D's");
        assertEq(ledger.submissionOf(round, nodeC), UPDATE_A, "the direct submission stands");
        assertEq(ledger.submissionOf(round, nodeD), UPDATE_B, "node D");
    }

    function test_submitUpdatesBySig_firstRecordOfANodeInABatchStands() public {
        bytes memory first = _record(KEY_C, round, UPDATE_A, 1);
        bytes memory batch = bytes.concat(first, first, _record(KEY_C, round, UPDATE_B, 2));
        assertEq(ledger.submitUpdatesBySig(round, batch), 1, "submitted");
        assertEq(ledger.submissionOf(round, nodeC), UPDATE_A, "first stands");
    }

    function test_submitUpdatesBySig_replayInTheSameRoundDoesNothing() public {
        bytes memory batch = bytes.concat(_record(KEY_C, round, UPDATE_A, 1), _record(KEY_D, round, UPDATE_B, 1));
        ledger.submitUpdatesBySig(round, batch);
        vm.recordLogs();
        assertEq(ledger.submitUpdatesBySig(round, batch), 0, "nothing recorded twice");
        assertEq(vm.getRecordedLogs().length, 0, "no events");
    }

    function test_submitUpdate_afterARelayedOneRevertsAlreadySubmitted() public {
        ledger.submitUpdatesBySig(round, _record(KEY_C, round, UPDATE_A, 1));
        vm.prank(nodeC);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerAlreadySubmitted.selector, round, nodeC));
        ledger.submitUpdate(round, UPDATE_B, 1);
    }

    function test_submitUpdate_stillOpenToANodeTheRelayerLeftOut() public {
        ledger.submitUpdatesBySig(round, _record(KEY_C, round, UPDATE_A, 1));
        vm.warp(deadline);
        vm.prank(nodeD);
        ledger.submitUpdate(round, UPDATE_B, 1);
        assertEq(ledger.submissionOf(round, nodeD), UPDATE_B, "direct submission up to the deadline");
    }

    function test_submitUpdatesBySig_acceptedAtTheDeadlineExactly() public {
        vm.warp(deadline);
        assertEq(ledger.submitUpdatesBySig(round, _record(KEY_C, round, UPDATE_A, 1)), 1, "inclusive deadline");
    }

    function test_submitUpdatesBySig_relayedUpdatesCanBeRejectedAndFinalized() public {
        ledger.submitUpdatesBySig(
            round, bytes.concat(_record(KEY_C, round, UPDATE_A, 1), _record(KEY_D, round, UPDATE_B, 1))
        );
        _expectEmit();
        emit FederatedLedger.UpdateRejected(round, nodeD, UPDATE_B, 4);
        ledger.rejectUpdate(round, nodeD, 4);
        ledger.finalizeRound(round, MODEL_1, ROOT_1, 1, META_1);
        assertTrue(_state(round) == FederatedLedger.RoundState.Finalized, "finalized");
    }

    // ------------------------------------------------------------------ batch-level refusals

    function test_submitUpdatesBySig_revertsOnMalformedLength() public {
        bytes memory good = _record(KEY_C, round, UPDATE_A, 1);
        uint256[5] memory lengths = [uint256(0), 1, 103, 105, 207];
        for (uint256 i = 0; i < lengths.length; ++i) {
            bytes memory batch = new bytes(lengths[i]);
            for (uint256 j = 0; j < batch.length && j < good.length; ++j) batch[j] = good[j];
            vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerMalformedBatch.selector, lengths[i]));
            ledger.submitUpdatesBySig(round, batch);
        }
    }

    function test_submitUpdatesBySig_revertsOnARoundNotOpen() public {
        bytes memory record = _record(KEY_C, round + 1, UPDATE_A, 1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerRoundNotOpen.selector, round + 1));
        ledger.submitUpdatesBySig(round + 1, record);

        ledger.finalizeRound(round, MODEL_1, ROOT_1, 1, META_1);
        record = _record(KEY_C, round, UPDATE_A, 1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerRoundNotOpen.selector, round));
        ledger.submitUpdatesBySig(round, record);
    }

    function test_submitUpdatesBySig_revertsAfterTheDeadline() public {
        bytes memory record = _record(KEY_C, round, UPDATE_A, 1);
        vm.warp(uint256(deadline) + 1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerDeadlinePassed.selector, round, deadline));
        ledger.submitUpdatesBySig(round, record);
    }

    // ------------------------------------------------------------------ record-level refusals

    function test_submitUpdatesBySig_revertsOnZeroHashOrSamplesEvenIfSigned() public {
        bytes memory zeroHash = _record(KEY_C, round, bytes32(0), 1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroHash.selector));
        ledger.submitUpdatesBySig(round, zeroHash);

        bytes memory zeroSamples = _record(KEY_C, round, UPDATE_A, 0);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerZeroSamples.selector));
        ledger.submitUpdatesBySig(round, zeroSamples);
    }

    function test_submitUpdatesBySig_unregisteredSignerRevertsTheWholeBatchNamingIt() public {
        address outsider = vm.addr(KEY_OUTSIDER);
        bytes memory batch = bytes.concat(
            _record(KEY_C, round, UPDATE_A, 1),
            _record(KEY_OUTSIDER, round, UPDATE_B, 1),
            _record(KEY_D, round, UPDATE_B, 1)
        );
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerSignerNotNode.selector, 1, outsider));
        ledger.submitUpdatesBySig(round, batch);
        _assertNothingRecorded();
    }

    function test_submitUpdatesBySig_revokedNodeIsRefused() public {
        bytes memory record = _record(KEY_C, round, UPDATE_A, 1);
        ledger.revokeNode(nodeC);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerSignerNotNode.selector, 0, nodeC));
        ledger.submitUpdatesBySig(round, record);
    }

    function test_submitUpdatesBySig_revertsOnHighS() public {
        bytes memory record = _record(KEY_C, round, UPDATE_A, 1);
        (bytes32 r, bytes32 vs) = _sigOf(record);
        // s just above n / 2, with either parity bit: what ecrecover would accept from a malleable signer.
        bytes32 high = bytes32(HALF_CURVE_ORDER + 1);
        bytes memory batch = bytes.concat(
            _record(KEY_D, round, UPDATE_B, 1), _pack(UPDATE_A, 1, r, high | (vs & bytes32(uint256(1) << 255)))
        );
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerInvalidSignature.selector, 1));
        ledger.submitUpdatesBySig(round, batch);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerInvalidSignature.selector, 0));
        ledger.submitUpdatesBySig(round, _pack(UPDATE_A, 1, r, bytes32(uint256(S_MASK))));
    }

    function test_submitUpdatesBySig_revertsWhenNoSignerIsRecovered() public {
        bytes memory record = _record(KEY_C, round, UPDATE_A, 1);
        (bytes32 r, bytes32 vs) = _sigOf(record);
        bytes memory err = abi.encodeWithSelector(FederatedLedger.LedgerInvalidSignature.selector, 0);
        vm.expectRevert(err);
        ledger.submitUpdatesBySig(round, _pack(UPDATE_A, 1, bytes32(0), vs)); // r = 0
        vm.expectRevert(err);
        ledger.submitUpdatesBySig(round, _pack(UPDATE_A, 1, r, vs & ~bytes32(uint256(S_MASK)))); // s = 0
        vm.expectRevert(err);
        ledger.submitUpdatesBySig(round, _pack(UPDATE_A, 1, bytes32(CURVE_ORDER), vs)); // r >= n
    }

    function test_submitUpdatesBySig_tamperedContentRecoversSomeoneElse() public {
        bytes memory record = _record(KEY_C, round, UPDATE_A, 10);
        (bytes32 r, bytes32 vs) = _sigOf(record);

        (bytes memory err, address signer) = _expectedRejection(0, UPDATE_B, 10, r, vs);
        assertTrue(signer != nodeC, "another hash, another signer");
        vm.expectRevert(err);
        ledger.submitUpdatesBySig(round, _pack(UPDATE_B, 10, r, vs));

        (err, signer) = _expectedRejection(0, UPDATE_A, 11, r, vs);
        assertTrue(signer != nodeC, "another sample count, another signer");
        vm.expectRevert(err);
        ledger.submitUpdatesBySig(round, _pack(UPDATE_A, 11, r, vs));
    }

    function test_submitUpdatesBySig_signatureForAnotherRoundIsRefused() public {
        bytes memory forNextRound = _record(KEY_C, round + 1, UPDATE_A, 1);
        (bytes32 r, bytes32 vs) = _sigOf(forNextRound);
        (bytes memory err, address signer) = _expectedRejection(0, UPDATE_A, 1, r, vs);
        assertTrue(signer != nodeC, "recovers someone else");
        vm.expectRevert(err);
        ledger.submitUpdatesBySig(round, forNextRound);
    }

    function test_submitUpdatesBySig_signatureFromBeforeAChainSplitIsRefused() public {
        bytes memory record = _record(KEY_C, round, UPDATE_A, 1);
        vm.chainId(block.chainid + 1);
        (bytes32 r, bytes32 vs) = _sigOf(record);
        (bytes memory err, address signer) = _expectedRejection(0, UPDATE_A, 1, r, vs);
        assertTrue(signer != nodeC, "recovers someone else");
        vm.expectRevert(err);
        ledger.submitUpdatesBySig(round, record);
        // Signed for the new chain id, it goes through.
        assertEq(ledger.submitUpdatesBySig(round, _record(KEY_C, round, UPDATE_A, 1)), 1, "new chain id");
    }
}

/// @notice Fuzzed signature edge cases: nothing but a canonical signature by a registered node, for this
///         round, chain and contract, over exactly the recorded content, ever records an update.
contract FederatedLedgerSignedSubmissionFuzzTest is SignedSubmissionTestBase {
    function testFuzz_relayed_recordsExactlyWhatWasSigned(uint256 keySeed, bytes32 updateHash, uint64 numSamples)
        public
    {
        uint256 key = _keyFrom(keySeed);
        address node = vm.addr(key);
        if (!ledger.isNode(node)) ledger.registerNode(node);
        updateHash = _nonZero(updateHash);
        numSamples = uint64(_bound(numSamples, 1, type(uint64).max));

        _expectEmit();
        emit FederatedLedger.UpdateSubmitted(round, node, updateHash, numSamples);
        assertEq(ledger.submitUpdatesBySig(round, _record(key, round, updateHash, numSamples)), 1, "submitted");
        assertEq(ledger.submissionOf(round, node), updateHash, "stored");
    }

    function testFuzz_highS_isRefused(uint256 sSeed, bool parity, uint64 numSamples) public {
        numSamples = uint64(_bound(numSamples, 1, type(uint64).max));
        bytes memory record = _record(KEY_C, round, UPDATE_A, numSamples);
        (bytes32 r,) = _sigOf(record);
        uint256 s = _bound(sSeed, HALF_CURVE_ORDER + 1, S_MASK);
        bytes32 vs = bytes32(s | (parity ? 1 << 255 : 0));
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerInvalidSignature.selector, 0));
        ledger.submitUpdatesBySig(round, _pack(UPDATE_A, numSamples, r, vs));
        _assertNothingRecorded();
    }

    /// @dev The malleable twin of a valid (r, s, v) is (r, n - s, 55 - v): same signer to ecrecover. Its s is
    ///      high, so it is refused as such, or, when n - s needs the top bit, its compact form is garbage.
    function testFuzz_malleableTwin_isRefused(uint256 keySeed, bytes32 updateHash, uint64 numSamples) public {
        uint256 key = _keyFrom(keySeed);
        address node = vm.addr(key);
        if (!ledger.isNode(node)) ledger.registerNode(node);
        updateHash = _nonZero(updateHash);
        numSamples = uint64(_bound(numSamples, 1, type(uint64).max));
        (bytes32 r, uint256 twinS, bytes32 vs) = _malleableTwin(key, updateHash, numSamples);

        (bytes memory err, address signer) = _expectedRejection(0, updateHash, numSamples, r, vs);
        assertTrue(signer != node, "never the node");
        if (twinS <= S_MASK) {
            assertEq(err, abi.encodeWithSelector(FederatedLedger.LedgerInvalidSignature.selector, 0), "high s");
        }
        vm.expectRevert(err);
        ledger.submitUpdatesBySig(round, _pack(updateHash, numSamples, r, vs));
        assertEq(ledger.submissionOf(round, node), bytes32(0), "nothing recorded");
    }

    /// @dev `key`'s signature turned into its twin, checked to fool plain ecrecover, in compact form.
    function _malleableTwin(uint256 key, bytes32 updateHash, uint64 numSamples)
        internal
        view
        returns (bytes32 r, uint256 twinS, bytes32 vs)
    {
        bytes32 digest = _submissionDigest(block.chainid, address(ledger), round, updateHash, numSamples);
        (uint8 v, bytes32 sigR, bytes32 s) = vm.sign(key, digest);
        r = sigR;
        twinS = CURVE_ORDER - uint256(s);
        uint8 twinV = v == 27 ? 28 : 27;
        assertEq(ecrecover(digest, twinV, r, bytes32(twinS)), vm.addr(key), "the twin fools plain ecrecover");
        vs = bytes32(twinS | (uint256(twinV - 27) << 255));
    }

    /// @dev The compact form cannot carry a v other than 27 or 28; the other parity is another signer.
    function testFuzz_flippedParity_isAnotherSigner(uint256 keySeed, bytes32 updateHash) public {
        uint256 key = _keyFrom(keySeed);
        address node = vm.addr(key);
        if (!ledger.isNode(node)) ledger.registerNode(node);
        updateHash = _nonZero(updateHash);
        (bytes32 r, bytes32 vs) = _sigOf(_record(key, round, updateHash, 5));
        vs ^= bytes32(uint256(1) << 255);
        (bytes memory err, address signer) = _expectedRejection(0, updateHash, 5, r, vs);
        assertTrue(signer != node, "never the node");
        vm.expectRevert(err);
        ledger.submitUpdatesBySig(round, _pack(updateHash, 5, r, vs));
    }

    function testFuzz_otherChainId_isRefused(uint256 chainId, bytes32 updateHash) public {
        vm.assume(chainId != block.chainid);
        updateHash = _nonZero(updateHash);
        bytes32 digest = _submissionDigest(chainId, address(ledger), round, updateHash, 5);
        (bytes32 r, bytes32 vs) = _signCompact(KEY_C, digest);
        (bytes memory err, address signer) = _expectedRejection(0, updateHash, 5, r, vs);
        assertTrue(signer != nodeC, "never the node");
        vm.expectRevert(err);
        ledger.submitUpdatesBySig(round, _pack(updateHash, 5, r, vs));
    }

    function testFuzz_otherContract_isRefused(address verifyingContract, bytes32 updateHash) public {
        vm.assume(verifyingContract != address(ledger));
        updateHash = _nonZero(updateHash);
        bytes32 digest = _submissionDigest(block.chainid, verifyingContract, round, updateHash, 5);
        (bytes32 r, bytes32 vs) = _signCompact(KEY_C, digest);
        (bytes memory err, address signer) = _expectedRejection(0, updateHash, 5, r, vs);
        assertTrue(signer != nodeC, "never the node");
        vm.expectRevert(err);
        ledger.submitUpdatesBySig(round, _pack(updateHash, 5, r, vs));
    }

    function testFuzz_replayIntoALaterRound_isRefused(uint8 roundsLater, bytes32 updateHash) public {
        updateHash = _nonZero(updateHash);
        bytes memory signedForNow = _record(KEY_C, round, updateHash, 5);
        uint256 later = _bound(roundsLater, 1, 5);
        for (uint256 i = 0; i < later; ++i) {
            ledger.finalizeRound(round, keccak256(abi.encode("model", round)), ROOT_1, 1, META_1);
            (round, deadline) = _openNext(GENESIS, 1);
        }
        (bytes32 r, bytes32 vs) = _sigOf(signedForNow);
        (bytes memory err, address signer) = _expectedRejection(0, updateHash, 5, r, vs);
        assertTrue(signer != nodeC, "never the node");
        vm.expectRevert(err);
        ledger.submitUpdatesBySig(round, signedForNow);
        assertEq(ledger.submissionOf(round, nodeC), bytes32(0), "nothing recorded");
    }

    function testFuzz_unregisteredSigner_isRefusedByName(uint256 keySeed, uint8 position) public {
        uint256 key = _keyFrom(keySeed);
        address signer = vm.addr(key);
        vm.assume(!ledger.isNode(signer));
        uint256 index = _bound(position, 0, 2);
        bytes[3] memory records =
            [_record(KEY_C, round, UPDATE_A, 1), _record(KEY_D, round, UPDATE_A, 1), _record(KEY_E, round, UPDATE_A, 1)];
        records[index] = _record(key, round, UPDATE_B, 1);
        vm.expectRevert(abi.encodeWithSelector(FederatedLedger.LedgerSignerNotNode.selector, index, signer));
        ledger.submitUpdatesBySig(round, bytes.concat(records[0], records[1], records[2]));
        _assertNothingRecorded();
    }

    function testFuzz_arbitrarySignature_neverRecords(bytes32 r, bytes32 vs, bytes32 updateHash, uint64 numSamples)
        public
    {
        updateHash = _nonZero(updateHash);
        numSamples = uint64(_bound(numSamples, 1, type(uint64).max));
        (bytes memory err, address signer) = _expectedRejection(0, updateHash, numSamples, r, vs);
        vm.assume(signer == address(0) || !ledger.isNode(signer));
        vm.expectRevert(err);
        ledger.submitUpdatesBySig(round, _pack(updateHash, numSamples, r, vs));
        _assertNothingRecorded();
    }

    /// @dev Bit i of `directMask` has node i submit directly first; bit i of `batchMask` puts it in the batch.
    function testFuzz_batch_skipsExactlyTheNodesThatSubmittedDirectly(uint8 directMask, uint8 batchMask) public {
        uint256[3] memory keys = [KEY_C, KEY_D, KEY_E];
        batchMask |= 1; // a batch has at least one record
        bytes memory batch;
        uint256 expected;
        for (uint256 i = 0; i < keys.length; ++i) {
            address node = vm.addr(keys[i]);
            bool direct = (directMask >> i) & 1 == 1;
            if (direct) {
                vm.prank(node);
                ledger.submitUpdate(round, UPDATE_A, 1);
            }
            if ((batchMask >> i) & 1 == 1) {
                batch = bytes.concat(batch, _record(keys[i], round, UPDATE_B, 2));
                if (!direct) ++expected;
            }
        }
        assertEq(ledger.submitUpdatesBySig(round, batch), expected, "recorded");
        for (uint256 i = 0; i < keys.length; ++i) {
            bytes32 want = (directMask >> i) & 1 == 1 ? UPDATE_A : (batchMask >> i) & 1 == 1 ? UPDATE_B : bytes32(0);
            assertEq(ledger.submissionOf(round, vm.addr(keys[i])), want, "submission");
        }
    }
}
