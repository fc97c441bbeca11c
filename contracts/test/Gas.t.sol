// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {FederatedLedger} from "../FederatedLedger.sol";
import {LedgerTestBase} from "./LedgerTestBase.sol";
import {vm} from "./Vm.sol";

/// @dev Gas per transaction as its sender pays it: 21,000 + calldata + execution (or EIP-7623's calldata
///      floor if higher). Each measured call is the test's first touch of the ledger after the fixture, and
///      forge runs setUp as its own transaction, so storage is cold as on a chain; the cold access to the
///      ledger's account that this call pays and a transaction does not is taken off. Within ~50 gas of
///      `forge test --gas-report` (which runs each call as its own transaction), on the safe side; storage
///      refunds, which a transaction's gas used nets out, are not subtracted (only acceptAdmin gets one).
///      Run with -vv to see the figures.
abstract contract GasTestBase is LedgerTestBase {
    event log_named_uint(string key, uint256 val); // forge prints these under "Logs"

    error CallFailed(bytes returned);

    uint256 internal constant TX_BASE = 21_000;
    uint256 internal constant COLD_ACCOUNT_ACCESS = 2_600;

    function _txGas(FederatedLedger target, address sender, bytes memory callData) internal returns (uint256) {
        vm.prank(sender);
        bool ok;
        uint256 before = gasleft();
        // In assembly so the call reads `callData` where it is: `target.call(callData)` would first copy it
        // to fresh memory, which costs the caller more the larger its memory already is.
        assembly ("memory-safe") {
            ok := call(gas(), target, 0, add(callData, 0x20), mload(callData), 0, 0)
        }
        uint256 execution = before - gasleft() - COLD_ACCOUNT_ACCESS;
        if (!ok) {
            bytes memory returned = new bytes(0);
            assembly ("memory-safe") {
                returned := mload(0x40)
                mstore(returned, returndatasize())
                returndatacopy(add(returned, 0x20), 0, returndatasize())
                mstore(0x40, add(add(returned, 0x20), returndatasize()))
            }
            revert CallFailed(returned);
        }
        uint256 zeros;
        for (uint256 i = 0; i < callData.length; ++i) {
            if (callData[i] == 0) ++zeros;
        }
        uint256 tokens = zeros + 4 * (callData.length - zeros);
        uint256 standard = TX_BASE + 4 * tokens + execution;
        uint256 floor = TX_BASE + 10 * tokens;
        return standard > floor ? standard : floor;
    }

    function _report(string memory what, uint256 gas, uint256 budget) internal {
        emit log_named_uint(what, gas);
        assertTrue(gas <= budget, what);
    }
}

/// @notice submitUpdate ≤ 55,000; attestVersion ≤ 50,000; the two-step admin handover and setPolicy.
contract FederatedLedgerGasTest is GasTestBase {
    address internal constant AUDITOR = address(0xA0D1);
    address internal constant FAILING_AUDITOR = address(0xA0D3);

    function setUp() public override {
        super.setUp();
        ledger.setAuditor(AUDITOR, true);
        ledger.setAuditor(address(0xA0D2), true);
        ledger.setAuditor(FAILING_AUDITOR, true);
        vm.prank(address(0xA0D2));
        ledger.attestVersion(GENESIS, true, REPORT_OK);
        vm.prank(FAILING_AUDITOR);
        ledger.attestVersion(GENESIS, false, REPORT_FAIL);
        _openNext(GENESIS, 1);
        ledger.transferAdmin(OUTSIDER);
    }

    function test_gas_submitUpdate() public {
        bytes memory call = abi.encodeCall(FederatedLedger.submitUpdate, (1, sha256("update"), 300));
        _report("submitUpdate", _txGas(ledger, NODE_A, call), 55_000);
    }

    function test_gas_attestVersion() public {
        bytes memory call = abi.encodeCall(FederatedLedger.attestVersion, (GENESIS, true, sha256("report")));
        _report("attestVersion (second attestation on the version)", _txGas(ledger, AUDITOR, call), 50_000);
    }

    function test_gas_attestVersionFailing() public {
        bytes memory call = abi.encodeCall(FederatedLedger.attestVersion, (GENESIS, false, sha256("report")));
        _report("attestVersion (failing)", _txGas(ledger, AUDITOR, call), 50_000);
    }

    function test_gas_resolveAttestation() public {
        bytes memory call =
            abi.encodeCall(FederatedLedger.resolveAttestation, (GENESIS, FAILING_AUDITOR, RESOLUTION));
        emit log_named_uint("resolveAttestation", _txGas(ledger, address(this), call));
    }

    function test_gas_acceptAdmin() public {
        bytes memory call = abi.encodeCall(FederatedLedger.acceptAdmin, ());
        emit log_named_uint("acceptAdmin (before its 4,800 refund)", _txGas(ledger, OUTSIDER, call));
    }

    function test_gas_transferAdmin() public {
        bytes memory call = abi.encodeCall(FederatedLedger.transferAdmin, (NODE_B));
        emit log_named_uint("transferAdmin (replacing a pending admin)", _txGas(ledger, address(this), call));
    }
}

/// @notice openRound with and without the attestation gate; the gate adds ≤ 5,000.
contract FederatedLedgerOpenRoundGasTest is GasTestBase {
    FederatedLedger internal ungated;
    FederatedLedger internal gated;

    function setUp() public override {
        vm.warp(START);
        ungated = new FederatedLedger(0);
        ungated.commitGenesis(GENESIS, GENESIS_META);
        gated = new FederatedLedger(3);
        gated.commitGenesis(GENESIS, GENESIS_META);
        for (uint160 i = 0; i < 32; ++i) {
            address auditor = address(0x5000 + i);
            gated.setAuditor(auditor, true);
            vm.prank(auditor);
            gated.attestVersion(GENESIS, true, REPORT_OK);
        }
    }

    function test_gas_openRound_gateCostsUnder5000() public {
        uint64 deadline = uint64(START) + WINDOW;
        bytes memory call = abi.encodeCall(FederatedLedger.openRound, (1, GENESIS, deadline, 1));
        uint256 withoutGate = _txGas(ungated, address(this), call);
        uint256 withGate = _txGas(gated, address(this), call);
        emit log_named_uint("openRound without gate (quorum 0)", withoutGate);
        emit log_named_uint("openRound with gate (quorum 3, 32 auditors attested)", withGate);
        _report("openRound: extra cost of the gate", withGate - withoutGate, 5_000);
    }
}

/// @notice submitUpdatesBySig per update in batches of 1, 10 and 100; ≤ 32,000 per update at 100.
contract FederatedLedgerBatchGasTest is GasTestBase {
    uint256 internal constant KEY_BASE = 0xF00D;
    uint256 internal constant NODES = 100;

    function setUp() public override {
        super.setUp();
        for (uint256 i = 0; i < NODES; ++i) {
            ledger.registerNode(vm.addr(KEY_BASE + i));
        }
        _openNext(GENESIS, 1);
    }

    /// @dev Realistic records: SHA-256 update hashes and a few hundred samples (two bytes) per node.
    function _perUpdate(uint256 count) internal returns (uint256) {
        bytes memory batch;
        for (uint256 i = 0; i < count; ++i) {
            batch = bytes.concat(batch, _record(KEY_BASE + i, 1, sha256(abi.encode("update", i)), uint64(300 + i)));
        }
        bytes memory call = abi.encodeCall(FederatedLedger.submitUpdatesBySig, (1, batch));
        uint256 perUpdate = _txGas(ledger, OUTSIDER, call) / count;
        for (uint256 i = 0; i < count; ++i) {
            assertTrue(ledger.submissionOf(1, vm.addr(KEY_BASE + i)) != bytes32(0), "recorded");
        }
        return perUpdate;
    }

    function test_gas_batchOf1() public {
        emit log_named_uint("submitUpdatesBySig per update, batch of 1", _perUpdate(1));
    }

    function test_gas_batchOf10() public {
        emit log_named_uint("submitUpdatesBySig per update, batch of 10", _perUpdate(10));
    }

    function test_gas_batchOf100() public {
        _report("submitUpdatesBySig per update, batch of 100", _perUpdate(100), 32_000);
    }
}

/// @notice finalizeRound ≤ 90,000 and flat (±1%) after rounds with 1, 10 and 100 submissions.
contract FederatedLedgerFinalizeGasTest is GasTestBase {
    uint256[3] internal counts = [uint256(1), 10, 100];
    FederatedLedger[3] internal ledgers;

    function setUp() public override {
        vm.warp(START);
        for (uint256 k = 0; k < counts.length; ++k) {
            FederatedLedger l = new FederatedLedger(0);
            l.commitGenesis(GENESIS, GENESIS_META);
            l.openRound(1, GENESIS, uint64(START) + WINDOW, 1);
            for (uint256 i = 0; i < counts[k]; ++i) {
                address node = address(uint160(0x9000 + i));
                bytes32 updateHash = sha256(abi.encode(i));
                l.registerNode(node);
                vm.prank(node);
                l.submitUpdate(1, updateHash, 100);
            }
            ledgers[k] = l;
        }
    }

    function test_gas_finalizeRound_flat() public {
        uint256 low = type(uint256).max;
        uint256 high;
        for (uint256 k = 0; k < counts.length; ++k) {
            bytes memory call = abi.encodeCall(
                FederatedLedger.finalizeRound, (1, MODEL_1, ROOT_1, uint32(counts[k]), META_1)
            );
            uint256 used = _txGas(ledgers[k], address(this), call);
            emit log_named_uint(string.concat("finalizeRound after updates: ", _decimal(counts[k])), used);
            assertTrue(used <= 90_000, "finalizeRound <= 90,000");
            if (used < low) low = used;
            if (used > high) high = used;
        }
        assertTrue((high - low) * 100 <= low, "flat within 1%");
    }

    function _decimal(uint256 value) internal pure returns (string memory) {
        if (value == 0) return "0";
        bytes memory digits;
        for (; value > 0; value /= 10) {
            digits = bytes.concat(bytes1(uint8(48 + value % 10)), digits);
        }
        return string(digits);
    }
}
