// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title FederatedLedger
/// @notice Pins every federated-learning update and every global model by its SHA-256 so that each
///         model version can be traced, and re-derived, from the chain alone.
/// @dev Storage holds only what a check needs: roles, one packed slot + base hash per round, one
///      slot per submission, one slot per committed model (its attestations packed in as bitmaps).
///      Everything auditors read but no check needs (sample counts, reasons, Merkle roots, metadata
///      hashes, parents, attestation reports, policies) lives in indexed events.
///      Nothing loops over nodes or updates: finalizing costs the same for 1 or 5,000 updates.
contract FederatedLedger {
    // ------------------------------------------------------------------ types

    /// @dev Lifecycle of a round. `None` is the zero value of a round never opened.
    enum RoundState {
        None,
        Open,
        Finalized,
        Abandoned
    }

    /// @dev Two slots: the base model hash, then deadline + minUpdates + state packed in one slot.
    struct Round {
        bytes32 baseModelHash;
        uint64 deadline;
        uint32 minUpdates;
        RoundState state;
    }

    /// @dev One slot: a committed model's place in the lineage (parent and roots are in events) and its
    ///      attestations, bit i of each bitmap standing for the auditor with index i. Version and round
    ///      grow by one per transaction, so 48 bits never run out. openRound reads this slot anyway, so
    ///      the attestation gate costs no extra storage read.
    struct ModelVersion {
        uint48 version;
        uint48 round;
        uint32 includedCount;
        bool committed;
        uint32 okBits; // auditors that attested the version ok
        uint32 failedBits; // auditors that attested a failure
        uint32 resolvedBits; // failures the admin resolved (a subset of failedBits)
    }

    /// @dev One slot: the highest round opened, the number of committed model versions, how many auditor
    ///      indices were handed out, and which indices belong to a current auditor (mirrors ROLE_AUDITOR).
    struct Counters {
        uint64 lastRound;
        uint64 versionCount;
        uint8 auditorCount;
        uint32 auditorBits;
    }

    /// @dev One slot: an account's role bits and, from the first time it was made an auditor, its index.
    struct Account {
        uint8 roles;
        bool hasAuditorIndex;
        uint8 auditorIndex;
    }

    uint8 private constant ROLE_NODE = 1;
    uint8 private constant ROLE_AGGREGATOR = 2;
    uint8 private constant ROLE_AUDITOR = 4;

    /// @notice How many distinct accounts can ever hold the auditor role on this deployment: each gets
    ///         one bit in a version's attestation bitmaps, for life (removing an auditor frees nothing).
    uint8 public constant MAX_AUDITORS = 32;

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant SUBMISSION_TYPEHASH =
        keccak256("UpdateSubmission(uint256 round,bytes32 updateHash,uint64 numSamples)");
    string private constant DOMAIN_NAME = "FederatedLedger";
    string private constant DOMAIN_VERSION = "1";
    /// @dev secp256k1's order n, halved: a signature with s above it is the malleable twin of a valid one.
    uint256 private constant HALF_CURVE_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    uint256 private constant S_MASK = (1 << 255) - 1;
    /// @dev One record of submitUpdatesBySig: updateHash (32) ‖ numSamples (8, big-endian) ‖ r (32) ‖ vs (32).
    uint256 private constant SIGNED_UPDATE_LENGTH = 104;

    // ------------------------------------------------------------------ errors

    /// @notice The caller is not the admin.
    error LedgerNotAdmin(address account);
    /// @notice The caller is not the pending admin named by transferAdmin.
    error LedgerNotPendingAdmin(address account);
    /// @notice The caller does not hold the aggregator role.
    error LedgerNotAggregator(address account);
    /// @notice The caller does not hold the auditor role.
    error LedgerNotAuditor(address account);
    /// @notice The caller is not a registered (and unrevoked) node.
    error LedgerNotNode(address account);
    /// @notice The zero address was given where an account is required.
    error LedgerZeroAddress();
    /// @notice A zero hash was given where a SHA-256 digest is required.
    error LedgerZeroHash();
    /// @notice The node is already registered.
    error LedgerNodeAlreadyRegistered(address node);
    /// @notice The aggregator role is already in the requested state.
    error LedgerAggregatorUnchanged(address account, bool enabled);
    /// @notice The auditor role is already in the requested state.
    error LedgerAuditorUnchanged(address account, bool enabled);
    /// @notice MAX_AUDITORS accounts have already been auditors; no index is left for a new one.
    error LedgerTooManyAuditors(uint256 maxAuditors);
    /// @notice The attestation quorum asked for at deployment exceeds the number of possible auditors.
    error LedgerQuorumTooLarge(uint256 quorum, uint256 maxAuditors);
    /// @notice The genesis model was already committed.
    error LedgerGenesisAlreadyCommitted(bytes32 genesisHash);
    /// @notice The genesis model is not committed yet.
    error LedgerNoGenesis();
    /// @notice Rounds are numbered 1, 2, 3, ... with no gaps.
    error LedgerRoundOutOfOrder(uint256 expected, uint256 round);
    /// @notice The previous round must be finalized or abandoned first.
    error LedgerRoundStillOpen(uint256 round);
    /// @notice The model hash is not a committed version.
    error LedgerModelNotCommitted(bytes32 modelHash);
    /// @notice The model hash is already a committed version (versions are unique).
    error LedgerModelAlreadyCommitted(bytes32 modelHash);
    /// @notice The base model lacks the attestations a round needs: `okCount` ok attestations by current
    ///         auditors against a quorum of `quorum`, and `unresolvedFailures` failing ones not resolved.
    error LedgerBaseNotAttested(bytes32 baseModelHash, uint256 okCount, uint256 quorum, uint256 unresolvedFailures);
    /// @notice The auditor already attested this version (a verdict is final).
    error LedgerAlreadyAttested(bytes32 modelHash, address auditor);
    /// @notice The auditor has no unresolved failing attestation on this version.
    error LedgerNoFailingAttestation(bytes32 modelHash, address auditor);
    /// @notice The deadline is not in the future.
    error LedgerDeadlineNotInFuture(uint64 deadline, uint256 nowTimestamp);
    /// @notice minUpdates must be at least one.
    error LedgerZeroMinUpdates();
    /// @notice The round is not open.
    error LedgerRoundNotOpen(uint256 round);
    /// @notice The round's submission deadline has passed.
    error LedgerDeadlinePassed(uint256 round, uint64 deadline);
    /// @notice The node already submitted an update in this round.
    error LedgerAlreadySubmitted(uint256 round, address node);
    /// @notice An update must be trained on at least one sample.
    error LedgerZeroSamples();
    /// @notice A batch of signed submissions must be one or more whole 104-byte records.
    error LedgerMalformedBatch(uint256 length);
    /// @notice Entry `index` of a batch has a malformed signature: s in the upper half of the curve
    ///         order (the malleable twin of a valid signature) or one from which no signer is recovered.
    error LedgerInvalidSignature(uint256 index);
    /// @notice Entry `index` of a batch recovers to `signer`, which is not a registered node. This is also
    ///         what a signature for another round, chain, contract or content gives: a different signer.
    error LedgerSignerNotNode(uint256 index, address signer);
    /// @notice The node has no submission in this round.
    error LedgerNoSubmission(uint256 round, address node);
    /// @notice The node's submission in this round was already rejected.
    error LedgerAlreadyRejected(uint256 round, address node);
    /// @notice A rejection needs a non-zero reason code.
    error LedgerZeroReason();
    /// @notice Before the deadline a round finalizes only with at least minUpdates included updates.
    error LedgerTooFewUpdates(uint256 round, uint32 includedCount, uint32 minUpdates);
    /// @notice The round's deadline has not passed yet.
    error LedgerDeadlineNotPassed(uint256 round, uint64 deadline);

    // ------------------------------------------------------------------ events

    /// @notice The admin named `newAdmin` as its successor; nothing changes until `newAdmin` accepts.
    event AdminTransferStarted(address indexed previousAdmin, address indexed newAdmin);
    /// @notice The admin role moved to a new account.
    event AdminTransferred(address indexed previousAdmin, address indexed newAdmin);
    /// @notice The aggregator role was granted (`enabled`) or removed.
    event AggregatorSet(address indexed account, bool enabled);
    /// @notice The auditor role was granted (`enabled`) or removed.
    event AuditorSet(address indexed account, bool enabled);
    /// @notice A node may now submit updates.
    event NodeRegistered(address indexed node);
    /// @notice A node may no longer submit updates; its past submissions stay on record.
    event NodeRevoked(address indexed node);
    /// @notice The federation's policy changes, for round `fromRound` and every later one, to the JSON
    ///         blob whose SHA-256 is `policyHash` (genesis metadata pins the policy in force before any).
    event PolicyChanged(uint256 indexed fromRound, bytes32 policyHash);
    /// @notice A new model version is part of the lineage. Genesis is version 0, round 0, parent 0.
    /// @param round the round that produced it (0 for genesis)
    /// @param modelHash SHA-256 of the model's canonical safetensors bytes
    /// @param parentHash the round's base model (0 for genesis)
    /// @param version position in the lineage, 0-based
    /// @param includedRoot Merkle root of the included update hashes (see verifyInclusion)
    /// @param includedCount number of updates merged into it
    /// @param metadataHash SHA-256 of the JSON blob naming the aggregation rule and metrics
    event ModelCommitted(
        uint256 indexed round,
        bytes32 indexed modelHash,
        bytes32 indexed parentHash,
        uint64 version,
        bytes32 includedRoot,
        uint32 includedCount,
        bytes32 metadataHash
    );
    /// @notice An auditor re-derived a model version and says whether it checks out (`ok`).
    /// @param reportHash SHA-256 of the auditor's report (the re-derivation verdict)
    event VersionAttested(bytes32 indexed modelHash, address indexed auditor, bool ok, bytes32 reportHash);
    /// @notice The admin overrode `auditor`'s failing attestation on `modelHash`; it no longer blocks rounds.
    /// @param resolutionHash SHA-256 of the admin's written reasons
    event AttestationResolved(bytes32 indexed modelHash, address indexed auditor, bytes32 resolutionHash);
    /// @notice A round opened on a committed base model.
    event RoundOpened(uint256 indexed round, bytes32 indexed baseModelHash, uint64 deadline, uint32 minUpdates);
    /// @notice A registered node pinned its update for a round (directly or through a relayed signature).
    event UpdateSubmitted(uint256 indexed round, address indexed node, bytes32 indexed updateHash, uint64 numSamples);
    /// @notice The aggregator refused a submitted update; `reasonCode` says why (see the client's RejectReason).
    event UpdateRejected(uint256 indexed round, address indexed node, bytes32 indexed updateHash, uint16 reasonCode);
    /// @notice A round closed without a new model (e.g. every update was rejected).
    event RoundAbandoned(uint256 indexed round, uint16 reasonCode);

    // ------------------------------------------------------------------ storage

    uint8 private immutable _attestationQuorum;
    uint256 private immutable _cachedChainId;
    bytes32 private immutable _cachedDomainSeparator;

    address private _admin;
    address private _pendingAdmin;
    Counters private _counters;
    bytes32 private _genesisHash;
    mapping(address account => Account) private _accounts;
    mapping(uint256 round => Round) private _rounds;
    mapping(uint256 round => mapping(address node => bytes32 updateHash)) private _submissions;
    mapping(uint256 round => mapping(address node => uint16 reasonCode)) private _rejections;
    mapping(bytes32 modelHash => ModelVersion) private _models;

    // ------------------------------------------------------------------ modifiers

    modifier onlyAdmin() {
        _checkAdmin();
        _;
    }

    modifier onlyAggregator() {
        _checkAggregator();
        _;
    }

    modifier onlyAuditor() {
        _checkAuditor();
        _;
    }

    /// @notice Deploys the ledger; the deployer becomes admin and an aggregator.
    /// @dev Emits AdminTransferred and AggregatorSet.
    /// @param quorum how many ok attestations by current auditors a model version needs, with
    ///        no unresolved failing one, before a round can open on it; 0 turns the gate off. Fixed for
    ///        the deployment's life; at most MAX_AUDITORS.
    constructor(uint8 quorum) {
        if (quorum > MAX_AUDITORS) revert LedgerQuorumTooLarge(quorum, MAX_AUDITORS);
        _attestationQuorum = quorum;
        _cachedChainId = block.chainid;
        _cachedDomainSeparator = _buildDomainSeparator();
        _admin = msg.sender;
        _accounts[msg.sender].roles = ROLE_AGGREGATOR;
        emit AdminTransferred(address(0), msg.sender);
        emit AggregatorSet(msg.sender, true);
    }

    // ------------------------------------------------------------------ roles

    /// @notice Names `newAdmin` as the next admin; the role moves only when `newAdmin` calls acceptAdmin.
    /// @dev Requires the caller to be admin and `newAdmin` non-zero. A new call replaces the pending admin
    ///      (name yourself to withdraw an offer). Emits AdminTransferStarted.
    function transferAdmin(address newAdmin) external onlyAdmin {
        if (newAdmin == address(0)) revert LedgerZeroAddress();
        _pendingAdmin = newAdmin;
        emit AdminTransferStarted(_admin, newAdmin);
    }

    /// @notice Completes the handover started by transferAdmin: the caller becomes admin.
    /// @dev Requires the caller to be the pending admin; clears it. Emits AdminTransferred.
    function acceptAdmin() external {
        if (msg.sender != _pendingAdmin) revert LedgerNotPendingAdmin(msg.sender);
        address previous = _admin;
        _admin = msg.sender;
        delete _pendingAdmin;
        emit AdminTransferred(previous, msg.sender);
    }

    /// @notice Grants or removes the aggregator role (open rounds, reject, finalize, abandon).
    /// @dev Requires the caller to be admin; reverts if nothing would change. Emits AggregatorSet.
    function setAggregator(address account, bool enabled) external onlyAdmin {
        if (account == address(0)) revert LedgerZeroAddress();
        uint8 roles = _accounts[account].roles;
        if (((roles & ROLE_AGGREGATOR) != 0) == enabled) revert LedgerAggregatorUnchanged(account, enabled);
        _accounts[account].roles = enabled ? roles | ROLE_AGGREGATOR : roles & ~ROLE_AGGREGATOR;
        emit AggregatorSet(account, enabled);
    }

    /// @notice Grants or removes the auditor role (attest model versions).
    /// @dev Requires the caller to be admin; reverts if nothing would change. The first grant gives the
    ///      account an auditor index it keeps for life, so at most MAX_AUDITORS distinct accounts can ever
    ///      be auditors (LedgerTooManyAuditors after that). Removing an auditor keeps its attestations on
    ///      record; its ok attestations stop counting toward the quorum (and count again if the role is
    ///      granted back), while its unresolved failing ones keep blocking until the admin resolves them:
    ///      removing an auditor never loosens the gate. Emits AuditorSet.
    function setAuditor(address account, bool enabled) external onlyAdmin {
        if (account == address(0)) revert LedgerZeroAddress();
        Account memory a = _accounts[account];
        if (((a.roles & ROLE_AUDITOR) != 0) == enabled) revert LedgerAuditorUnchanged(account, enabled);
        Counters memory c = _counters;
        if (!a.hasAuditorIndex) {
            // Only reached when granting: an account never made auditor cannot be removed (unchanged).
            if (c.auditorCount == MAX_AUDITORS) revert LedgerTooManyAuditors(MAX_AUDITORS);
            a.hasAuditorIndex = true;
            a.auditorIndex = c.auditorCount;
            c.auditorCount += 1;
        }
        uint32 bit = uint32(1) << a.auditorIndex;
        if (enabled) {
            a.roles |= ROLE_AUDITOR;
            c.auditorBits |= bit;
        } else {
            a.roles &= ~ROLE_AUDITOR;
            c.auditorBits &= ~bit;
        }
        _accounts[account] = a;
        _counters = c;
        emit AuditorSet(account, enabled);
    }

    /// @notice Lets `node` submit updates from now on (a revoked node can be registered again).
    /// @dev Requires the caller to be admin and the node not currently registered. Emits NodeRegistered.
    function registerNode(address node) external onlyAdmin {
        if (node == address(0)) revert LedgerZeroAddress();
        uint8 roles = _accounts[node].roles;
        if ((roles & ROLE_NODE) != 0) revert LedgerNodeAlreadyRegistered(node);
        _accounts[node].roles = roles | ROLE_NODE;
        emit NodeRegistered(node);
    }

    /// @notice Stops `node` from submitting; what it submitted before stays on record.
    /// @dev Requires the caller to be admin and the node registered. Emits NodeRevoked.
    function revokeNode(address node) external onlyAdmin {
        uint8 roles = _accounts[node].roles;
        if ((roles & ROLE_NODE) == 0) revert LedgerNotNode(node);
        _accounts[node].roles = roles & ~ROLE_NODE;
        emit NodeRevoked(node);
    }

    // ------------------------------------------------------------------ policy

    /// @notice Records that the federation's policy (aggregation rule and parameters, limits, ...) is,
    ///         from the next round on, the JSON blob whose SHA-256 is `policyHash`.
    /// @dev Requires the caller to be admin (the aggregator applies the policy, so it does not get to
    ///      change it), a committed genesis (its metadata pins the first policy), no open round, and a
    ///      non-zero hash. Stores nothing, as no check on chain reads the policy: round r runs under the
    ///      last PolicyChanged with fromRound <= r, or genesis's policy if there is none.
    ///      Emits PolicyChanged with fromRound = the next round to open.
    function setPolicy(bytes32 policyHash) external onlyAdmin {
        if (policyHash == bytes32(0)) revert LedgerZeroHash();
        Counters memory c = _counters;
        if (c.versionCount == 0) revert LedgerNoGenesis();
        _checkNoRoundOpen(c.lastRound);
        emit PolicyChanged(uint256(c.lastRound) + 1, policyHash);
    }

    // ------------------------------------------------------------------ lineage

    /// @notice Commits the genesis model as version 0; every later version descends from it.
    /// @dev Requires the aggregator role; only once. Emits ModelCommitted with round 0 and parent 0.
    /// @param modelHash SHA-256 of the genesis model's canonical bytes
    /// @param metadataHash SHA-256 of the JSON blob describing how genesis was made (architecture, seed)
    ///        and the federation's policy
    function commitGenesis(bytes32 modelHash, bytes32 metadataHash) external onlyAggregator {
        if (modelHash == bytes32(0)) revert LedgerZeroHash();
        if (_counters.versionCount != 0) revert LedgerGenesisAlreadyCommitted(_genesisHash);
        _genesisHash = modelHash;
        _commitModel(0, modelHash, bytes32(0), bytes32(0), 0, metadataHash);
    }

    /// @notice Opens round `round` for submissions until `deadline` (unix seconds, inclusive).
    /// @dev Requires the aggregator role; rounds are numbered 1, 2, ... and the previous one must be
    ///      closed; `baseModelHash` must be a committed version and, if the deployment has an attestation
    ///      quorum, hold at least that many ok attestations by current auditors and no unresolved failing
    ///      one (LedgerBaseNotAttested). Emits RoundOpened.
    /// @param minUpdates how many included updates let the round finalize before its deadline
    function openRound(uint256 round, bytes32 baseModelHash, uint64 deadline, uint32 minUpdates)
        external
        onlyAggregator
    {
        uint64 lastRound = _counters.lastRound;
        uint256 expected = uint256(lastRound) + 1;
        if (round != expected) revert LedgerRoundOutOfOrder(expected, round);
        _checkNoRoundOpen(lastRound);
        ModelVersion storage base = _models[baseModelHash];
        if (!base.committed) revert LedgerModelNotCommitted(baseModelHash);
        if (_attestationQuorum != 0) _checkAttested(baseModelHash, base, _counters.auditorBits);
        // Deadlines are minutes to hours away; a validator's few seconds of timestamp drift do not matter.
        // slither-disable-next-line timestamp
        if (deadline <= block.timestamp) revert LedgerDeadlineNotInFuture(deadline, block.timestamp);
        if (minUpdates == 0) revert LedgerZeroMinUpdates();

        _counters.lastRound = uint64(round);
        _rounds[round] = Round({
            baseModelHash: baseModelHash, deadline: deadline, minUpdates: minUpdates, state: RoundState.Open
        });
        emit RoundOpened(round, baseModelHash, deadline, minUpdates);
    }

    /// @notice Pins the caller's update for `round` by its SHA-256.
    /// @dev Requires a registered node, an open round before its deadline, and no earlier submission
    ///      by this node in this round. One storage slot written. Emits UpdateSubmitted.
    /// @param updateHash SHA-256 of the update's canonical safetensors bytes
    /// @param numSamples how many local samples trained it (the FedAvg weight)
    function submitUpdate(uint256 round, bytes32 updateHash, uint64 numSamples) external {
        if ((_accounts[msg.sender].roles & ROLE_NODE) == 0) revert LedgerNotNode(msg.sender);
        if (updateHash == bytes32(0)) revert LedgerZeroHash();
        if (numSamples == 0) revert LedgerZeroSamples();
        _checkOpenBeforeDeadline(round);
        mapping(address node => bytes32 updateHash) storage submissions = _submissions[round];
        if (submissions[msg.sender] != bytes32(0)) revert LedgerAlreadySubmitted(round, msg.sender);
        _recordSubmission(submissions, round, msg.sender, updateHash, numSamples);
    }

    /// @notice Posts updates that registered nodes signed off-chain (EIP-712, see hashSubmission), any
    ///         number in one transaction; any account may relay them. Each is recorded exactly as if its
    ///         node had called submitUpdate: the same storage slot, the same UpdateSubmitted event.
    /// @dev `signedUpdates` is a run of 104-byte records, each updateHash (32 bytes) ‖ numSamples (8 bytes,
    ///      big-endian) ‖ r (32) ‖ vs (32), where (r, vs) is the node's EIP-2098 compact signature: vs is s
    ///      with v - 27 in its top bit. Packed rather than ABI-encoded because ABI padding of numSamples
    ///      alone costs 96 gas per update.
    ///      Requires one or more whole records (LedgerMalformedBatch) and `round` open before its deadline
    ///      (LedgerRoundNotOpen, LedgerDeadlinePassed). Every record needs a non-zero update hash and
    ///      sample count and a canonical signature (low s; the compact form always means v = 27 or 28)
    ///      that recovers to a registered node over (round, updateHash, numSamples) under this contract's
    ///      EIP-712 domain. A record failing any of that reverts the whole batch (LedgerZeroHash,
    ///      LedgerZeroSamples, LedgerInvalidSignature(index), LedgerSignerNotNode(index, signer)): all of it
    ///      is fixed when signed, so the relayer can check it before sending. A signature for another
    ///      round, chain id or contract recovers some other account, so it fails as LedgerSignerNotNode.
    ///      A record whose node already has a submission in `round` (sent directly, or earlier in the
    ///      batch) is skipped instead: that state is the node's to change, so a node cannot make a
    ///      relayer's batch fail, and its first submission stands. A node whose signature is not relayed
    ///      can still call submitUpdate before the deadline, so a relayer cannot censor it.
    ///      Emits UpdateSubmitted for each record recorded.
    /// @param signedUpdates the records, all for `round`
    /// @return submitted how many records were recorded; the others were skipped
    function submitUpdatesBySig(uint256 round, bytes calldata signedUpdates) external returns (uint256 submitted) {
        uint256 length = signedUpdates.length;
        if (length == 0 || length % SIGNED_UPDATE_LENGTH != 0) revert LedgerMalformedBatch(length);
        _checkOpenBeforeDeadline(round);
        uint256 failedAt;
        (submitted, failedAt) = _recordSignedUpdates(round, signedUpdates);
        if (failedAt != 0) {
            uint256 index = failedAt - 1;
            uint256 start = index * SIGNED_UPDATE_LENGTH;
            _revertForRecord(round, signedUpdates[start:start + SIGNED_UPDATE_LENGTH], index);
        }
    }

    /// @notice Records that `node`'s update in `round` failed verification, with a reason code.
    /// @dev Requires the aggregator role, an open round, a submission by `node`, not yet rejected,
    ///      and a non-zero reason. Emits UpdateRejected.
    function rejectUpdate(uint256 round, address node, uint16 reasonCode) external onlyAggregator {
        if (reasonCode == 0) revert LedgerZeroReason();
        if (_rounds[round].state != RoundState.Open) revert LedgerRoundNotOpen(round);
        bytes32 updateHash = _submissions[round][node];
        if (updateHash == bytes32(0)) revert LedgerNoSubmission(round, node);
        if (_rejections[round][node] != 0) revert LedgerAlreadyRejected(round, node);
        _rejections[round][node] = reasonCode;
        emit UpdateRejected(round, node, updateHash, reasonCode);
    }

    /// @notice Closes `round` by committing the aggregated model as the next version.
    /// @dev Requires the aggregator role and an open round; before the deadline at least minUpdates
    ///      must be included, after it at least one. Costs the same for any `includedCount`: the
    ///      included set is committed by its Merkle root. Emits ModelCommitted.
    /// @param modelHash SHA-256 of the new global model's canonical bytes
    /// @param includedRoot Merkle root of the included update hashes (see verifyInclusion)
    /// @param includedCount number of included updates
    /// @param metadataHash SHA-256 of the JSON blob naming the rule and the evaluation metrics
    function finalizeRound(
        uint256 round,
        bytes32 modelHash,
        bytes32 includedRoot,
        uint32 includedCount,
        bytes32 metadataHash
    ) external onlyAggregator {
        Round storage r = _rounds[round];
        if (r.state != RoundState.Open) revert LedgerRoundNotOpen(round);
        if (modelHash == bytes32(0) || includedRoot == bytes32(0)) revert LedgerZeroHash();
        uint32 needed = r.minUpdates;
        // Deadlines are minutes to hours away; a validator's few seconds of timestamp drift do not matter.
        // slither-disable-next-line timestamp
        if (block.timestamp > r.deadline) needed = 1;
        if (includedCount < needed) revert LedgerTooFewUpdates(round, includedCount, needed);
        r.state = RoundState.Finalized;
        _commitModel(round, modelHash, r.baseModelHash, includedRoot, includedCount, metadataHash);
    }

    /// @notice Closes `round` without a new model, after its deadline (e.g. every update was rejected).
    /// @dev Requires the aggregator role, an open round and a passed deadline. Emits RoundAbandoned.
    function abandonRound(uint256 round, uint16 reasonCode) external onlyAggregator {
        Round storage r = _rounds[round];
        if (r.state != RoundState.Open) revert LedgerRoundNotOpen(round);
        // Deadlines are minutes to hours away; a validator's few seconds of timestamp drift do not matter.
        // slither-disable-next-line timestamp
        if (block.timestamp <= r.deadline) revert LedgerDeadlineNotPassed(round, r.deadline);
        r.state = RoundState.Abandoned;
        emit RoundAbandoned(round, reasonCode);
    }

    // ------------------------------------------------------------------ attestations

    /// @notice Records the caller's verdict on model version `modelHash`: `ok` if re-deriving it from the
    ///         chain reproduced its hash and every check passed; `reportHash` pins the auditor's report.
    /// @dev Requires the auditor role, a committed version (genesis included), a non-zero report hash,
    ///      and no earlier attestation by this auditor on this version: a verdict is final, and only the
    ///      admin can lift a failing one (resolveAttestation). Writes the version's one slot.
    ///      Emits VersionAttested.
    function attestVersion(bytes32 modelHash, bool ok, bytes32 reportHash) external onlyAuditor {
        if (reportHash == bytes32(0)) revert LedgerZeroHash();
        ModelVersion storage m = _models[modelHash];
        if (!m.committed) revert LedgerModelNotCommitted(modelHash);
        uint32 bit = uint32(1) << _accounts[msg.sender].auditorIndex;
        if (((m.okBits | m.failedBits) & bit) != 0) revert LedgerAlreadyAttested(modelHash, msg.sender);
        if (ok) m.okBits |= bit;
        else m.failedBits |= bit;
        emit VersionAttested(modelHash, msg.sender, ok, reportHash);
    }

    /// @notice Overrides `auditor`'s failing attestation on `modelHash` so that it no longer blocks
    ///         rounds from building on that version; `resolutionHash` pins the admin's written reasons.
    /// @dev Requires the caller to be admin, a non-zero resolution hash, and a failing attestation by
    ///      `auditor` (current or removed) on `modelHash` that is not resolved yet. The failure stays on
    ///      record and does not become an ok attestation. Emits AttestationResolved.
    function resolveAttestation(bytes32 modelHash, address auditor, bytes32 resolutionHash) external onlyAdmin {
        if (resolutionHash == bytes32(0)) revert LedgerZeroHash();
        ModelVersion storage m = _models[modelHash];
        uint32 bit = _auditorBit(auditor);
        if ((m.failedBits & ~m.resolvedBits & bit) == 0) revert LedgerNoFailingAttestation(modelHash, auditor);
        m.resolvedBits |= bit;
        emit AttestationResolved(modelHash, auditor, resolutionHash);
    }

    // ------------------------------------------------------------------ views

    /// @notice The current admin.
    function admin() external view returns (address) {
        return _admin;
    }

    /// @notice The account named by transferAdmin that has not accepted yet (zero if none).
    function pendingAdmin() external view returns (address) {
        return _pendingAdmin;
    }

    /// @notice Whether `account` may submit updates.
    function isNode(address account) external view returns (bool) {
        return (_accounts[account].roles & ROLE_NODE) != 0;
    }

    /// @notice Whether `account` holds the aggregator role.
    function isAggregator(address account) external view returns (bool) {
        return (_accounts[account].roles & ROLE_AGGREGATOR) != 0;
    }

    /// @notice Whether `account` holds the auditor role.
    function isAuditor(address account) external view returns (bool) {
        return (_accounts[account].roles & ROLE_AUDITOR) != 0;
    }

    /// @notice How many ok attestations by current auditors a base model needs before a round opens on
    ///         it (0: no gate). Fixed at deployment.
    function attestationQuorum() external view returns (uint8) {
        return _attestationQuorum;
    }

    /// @notice The genesis model hash (zero until committed).
    function genesisHash() external view returns (bytes32) {
        return _genesisHash;
    }

    /// @notice The highest round opened so far (0 if none) and the number of committed versions.
    function counters() external view returns (uint64 lastRound, uint64 versionCount) {
        Counters memory c = _counters;
        return (c.lastRound, c.versionCount);
    }

    /// @notice A round's base model, deadline, minUpdates and state (all zero if never opened).
    function getRound(uint256 round)
        external
        view
        returns (bytes32 baseModelHash, uint64 deadline, uint32 minUpdates, RoundState state)
    {
        Round memory r = _rounds[round];
        return (r.baseModelHash, r.deadline, r.minUpdates, r.state);
    }

    /// @notice The update hash `node` submitted in `round` (zero if none).
    function submissionOf(uint256 round, address node) external view returns (bytes32) {
        return _submissions[round][node];
    }

    /// @notice The reason code `node`'s update in `round` was rejected with (zero if not rejected).
    function rejectionOf(uint256 round, address node) external view returns (uint16) {
        return _rejections[round][node];
    }

    /// @notice Where `modelHash` sits in the lineage; `committed` is false for unknown hashes.
    function modelOf(bytes32 modelHash)
        external
        view
        returns (bool committed, uint64 version, uint64 round, uint32 includedCount)
    {
        ModelVersion memory m = _models[modelHash];
        return (m.committed, m.version, m.round, m.includedCount);
    }

    /// @notice A version's attestations: ok ones (by anyone who was an auditor), ok ones by current
    ///         auditors (what the quorum counts), failing ones, and failing ones not resolved.
    function attestationCounts(bytes32 modelHash)
        external
        view
        returns (uint256 okCount, uint256 currentOkCount, uint256 failedCount, uint256 unresolvedCount)
    {
        ModelVersion memory m = _models[modelHash];
        return (
            _popcount(m.okBits),
            _popcount(m.okBits & _counters.auditorBits),
            _popcount(m.failedBits),
            _popcount(m.failedBits & ~m.resolvedBits)
        );
    }

    /// @notice Whether `auditor` attested `modelHash`, its verdict, and whether the admin resolved it
    ///         (only a failing verdict can be resolved).
    function attestationOf(bytes32 modelHash, address auditor)
        external
        view
        returns (bool attested, bool ok, bool resolved)
    {
        ModelVersion memory m = _models[modelHash];
        uint32 bit = _auditorBit(auditor);
        ok = (m.okBits & bit) != 0;
        attested = ok || (m.failedBits & bit) != 0;
        resolved = (m.resolvedBits & bit) != 0;
    }

    /// @notice The EIP-712 digest a node signs to have `updateHash` relayed for `round`
    ///         (typed data UpdateSubmission(uint256 round,bytes32 updateHash,uint64 numSamples) under
    ///         domain name "FederatedLedger", version "1", this chain id and this contract).
    function hashSubmission(uint256 round, bytes32 updateHash, uint64 numSamples) external view returns (bytes32) {
        return _typedDataHash(_domainSeparator(), round, updateHash, numSamples);
    }

    /// @notice The EIP-712 domain signatures are checked under (ERC-5267): name, version, chain id and
    ///         this contract; no salt, no extensions.
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        return (hex"0f", DOMAIN_NAME, DOMAIN_VERSION, block.chainid, address(this), bytes32(0), new uint256[](0));
    }

    /// @notice Checks a Merkle proof that `updateHash` is one of the leaves under `root`.
    /// @dev Leaf = sha256(0x00 ‖ updateHash); inner node = sha256(0x01 ‖ min(a, b) ‖ max(a, b)).
    ///      The domain bytes keep a leaf from passing as an inner node; sorted pairs need no side bits.
    function verifyInclusion(bytes32 root, bytes32 updateHash, bytes32[] calldata proof)
        external
        pure
        returns (bool)
    {
        bytes32 node = sha256(abi.encodePacked(bytes1(0x00), updateHash));
        for (uint256 i = 0; i < proof.length; ++i) {
            bytes32 sibling = proof[i];
            node = node < sibling
                ? sha256(abi.encodePacked(bytes1(0x01), node, sibling))
                : sha256(abi.encodePacked(bytes1(0x01), sibling, node));
        }
        return node == root;
    }

    // ------------------------------------------------------------------ internals

    function _checkAdmin() private view {
        if (msg.sender != _admin) revert LedgerNotAdmin(msg.sender);
    }

    function _checkAggregator() private view {
        if ((_accounts[msg.sender].roles & ROLE_AGGREGATOR) == 0) revert LedgerNotAggregator(msg.sender);
    }

    function _checkAuditor() private view {
        if ((_accounts[msg.sender].roles & ROLE_AUDITOR) == 0) revert LedgerNotAuditor(msg.sender);
    }

    function _checkNoRoundOpen(uint64 lastRound) private view {
        if (lastRound != 0 && _rounds[lastRound].state == RoundState.Open) revert LedgerRoundStillOpen(lastRound);
    }

    function _checkOpenBeforeDeadline(uint256 round) private view {
        Round storage r = _rounds[round];
        if (r.state != RoundState.Open) revert LedgerRoundNotOpen(round);
        // Deadlines are minutes to hours away; a validator's few seconds of timestamp drift do not matter.
        // slither-disable-next-line timestamp
        if (block.timestamp > r.deadline) revert LedgerDeadlinePassed(round, r.deadline);
    }

    /// @dev The quorum gate of openRound: enough ok attestations by current auditors, no unresolved failure.
    function _checkAttested(bytes32 modelHash, ModelVersion storage m, uint32 auditorBits) private view {
        uint256 okCount = _popcount(m.okBits & auditorBits);
        uint256 unresolved = _popcount(m.failedBits & ~m.resolvedBits);
        if (okCount < _attestationQuorum || unresolved != 0) {
            revert LedgerBaseNotAttested(modelHash, okCount, _attestationQuorum, unresolved);
        }
    }

    /// @dev The single place a submission is written, for submitUpdate and submitUpdatesBySig alike.
    function _recordSubmission(
        mapping(address node => bytes32 updateHash) storage submissions,
        uint256 round,
        address node,
        bytes32 updateHash,
        uint64 numSamples
    ) private {
        submissions[node] = updateHash;
        emit UpdateSubmitted(round, node, updateHash, numSamples);
    }

    function _commitModel(
        uint256 round,
        bytes32 modelHash,
        bytes32 parentHash,
        bytes32 includedRoot,
        uint32 includedCount,
        bytes32 metadataHash
    ) private {
        ModelVersion storage m = _models[modelHash];
        if (m.committed) revert LedgerModelAlreadyCommitted(modelHash);
        uint64 version = _counters.versionCount;
        _counters.versionCount = version + 1;
        // The attestation bitmaps start at zero, as the slot does: only the lineage fields are written.
        m.version = uint48(version);
        m.round = uint48(round);
        m.includedCount = includedCount;
        m.committed = true;
        emit ModelCommitted(round, modelHash, parentHash, version, includedRoot, includedCount, metadataHash);
    }

    /// @dev The bit of `auditor`'s index in the attestation bitmaps; 0 for an account never made auditor.
    function _auditorBit(address auditor) private view returns (uint32) {
        Account memory a = _accounts[auditor];
        return a.hasAuditorIndex ? uint32(1) << a.auditorIndex : 0;
    }

    function _domainSeparator() private view returns (bytes32) {
        // Recomputed only after a chain split changes the chain id, so old-chain signatures stop working.
        return block.chainid == _cachedChainId ? _cachedDomainSeparator : _buildDomainSeparator();
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(
            abi.encode(
                DOMAIN_TYPEHASH,
                keccak256(bytes(DOMAIN_NAME)),
                keccak256(bytes(DOMAIN_VERSION)),
                block.chainid,
                address(this)
            )
        );
    }

    /// @dev keccak256(0x1901 ‖ separator ‖ keccak256(abi.encode(SUBMISSION_TYPEHASH, round, updateHash,
    ///      numSamples))), for hashSubmission and _revertForRecord; _recordSignedUpdates hashes the same
    ///      bytes in its own frame. Uses memory past the free pointer without allocating it.
    function _typedDataHash(bytes32 separator, uint256 round, bytes32 updateHash, uint64 numSamples)
        private
        pure
        returns (bytes32 digest)
    {
        bytes32 typeHash = SUBMISSION_TYPEHASH;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typeHash)
            mstore(add(ptr, 0x20), round)
            mstore(add(ptr, 0x40), updateHash)
            mstore(add(ptr, 0x60), and(numSamples, 0xffffffffffffffff))
            let structHash := keccak256(ptr, 0x80)
            mstore(ptr, hex"1901")
            mstore(add(ptr, 0x02), separator)
            mstore(add(ptr, 0x22), structHash)
            digest := keccak256(ptr, 0x42)
        }
    }

    /// @dev The per-record work of submitUpdatesBySig for records that pass every check: recover the
    ///      signer, check its node role, and record the update through the very slot and event
    ///      _recordSubmission uses, skipping a node that already has a submission in `round`. It stops at
    ///      the first record failing a check and returns its position + 1 as `failedAt` (0 if none), for
    ///      _revertForRecord to name the error. It is assembly because it runs once per update: the same
    ///      steps in Solidity cost ~900 gas more per update (32.9k instead of 31.9k in a batch of 100, where
    ///      the fresh slot, the cold role read, ecrecover, the event and calldata alone cost 31.5k).
    ///      Memory from the frame holds three regions, rewritten in place for each record:
    ///        frame + 0x00  0x1901 ‖ domain separator ‖ struct hash                 (EIP-712 digest input)
    ///        frame + 0x60  SUBMISSION_TYPEHASH ‖ round ‖ updateHash ‖ numSamples   (struct hash input;
    ///                      the numSamples word is also the UpdateSubmitted event's data)
    ///        frame + 0xe0  digest ‖ v ‖ r ‖ s                                      (ecrecover input)
    function _recordSignedUpdates(uint256 round, bytes calldata signedUpdates)
        private
        returns (uint256 submitted, uint256 failedAt)
    {
        uint256 frame = _allocateSignatureFrame(round);
        bytes32 topic = UpdateSubmitted.selector;
        mapping(address node => bytes32 updateHash) storage submissions = _submissions[round];
        assembly ("memory-safe") {
            let end := add(signedUpdates.offset, signedUpdates.length)
            for { let record := signedUpdates.offset } lt(record, end) { record := add(record, SIGNED_UPDATE_LENGTH) } {
                let updateHash := calldataload(record)
                let numSamples := shr(192, calldataload(add(record, 0x20)))
                let vs := calldataload(add(record, 0x48))
                let s := and(vs, S_MASK)
                if or(or(iszero(updateHash), iszero(numSamples)), gt(s, HALF_CURVE_ORDER)) {
                    failedAt := add(div(sub(record, signedUpdates.offset), SIGNED_UPDATE_LENGTH), 1)
                    break
                }
                mstore(add(frame, 0xa0), updateHash)
                mstore(add(frame, 0xc0), numSamples)
                mstore(add(frame, 0x22), keccak256(add(frame, 0x60), 0x80))
                mstore(add(frame, 0xe0), keccak256(frame, 0x42))
                mstore(add(frame, 0x100), add(shr(255, vs), 27))
                mstore(add(frame, 0x120), calldataload(add(record, 0x28)))
                mstore(add(frame, 0x140), s)
                // ecrecover (precompile 1) writes the signer, zero-padded like a mapping key, to 0x00; when
                // no signer is recovered it returns nothing, leaving 0x00 stale, hence the returndatasize test.
                pop(staticcall(gas(), 1, add(frame, 0xe0), 0x80, 0x00, 0x20))
                let node := mload(0x00)
                // _accounts[node].roles is the lowest byte of the account's slot.
                mstore(0x20, _accounts.slot)
                if or(iszero(returndatasize()), iszero(and(sload(keccak256(0x00, 0x40)), ROLE_NODE))) {
                    failedAt := add(div(sub(record, signedUpdates.offset), SIGNED_UPDATE_LENGTH), 1)
                    break
                }
                // _submissions[round][node]: record the update unless the node already submitted.
                mstore(0x20, submissions.slot)
                let slot := keccak256(0x00, 0x40)
                if iszero(sload(slot)) {
                    sstore(slot, updateHash)
                    log4(add(frame, 0xc0), 0x20, topic, round, node, updateHash)
                    submitted := add(submitted, 1)
                }
            }
        }
    }

    /// @dev Allocates the 0x160 bytes _recordSignedUpdates hashes and recovers in, with the parts that are
    ///      the same for every record of the batch already written.
    function _allocateSignatureFrame(uint256 round) private view returns (uint256 frame) {
        bytes32 separator = _domainSeparator();
        bytes32 typeHash = SUBMISSION_TYPEHASH;
        assembly ("memory-safe") {
            frame := mload(0x40)
            mstore(0x40, add(frame, 0x160))
            mstore(frame, hex"1901")
            mstore(add(frame, 0x02), separator)
            mstore(add(frame, 0x60), typeHash)
            mstore(add(frame, 0x80), round)
        }
    }

    /// @dev Reverts with the named error for the record _recordSignedUpdates stopped at, checking it again
    ///      in plain Solidity, in the same order.
    function _revertForRecord(uint256 round, bytes calldata record, uint256 index) private view {
        bytes32 updateHash = bytes32(record[0:32]);
        uint64 numSamples = uint64(bytes8(record[32:40]));
        if (updateHash == bytes32(0)) revert LedgerZeroHash();
        if (numSamples == 0) revert LedgerZeroSamples();
        bytes32 digest = _typedDataHash(_domainSeparator(), round, updateHash, numSamples);
        address signer = _recoverSigner(digest, bytes32(record[40:72]), bytes32(record[72:104]));
        if (signer == address(0)) revert LedgerInvalidSignature(index);
        revert LedgerSignerNotNode(index, signer);
    }

    /// @dev ecrecover for an EIP-2098 compact signature, giving address(0) for what ecrecover would accept
    ///      but a canonical signer never produces (s above half the curve order) and for no signer at all.
    function _recoverSigner(bytes32 digest, bytes32 r, bytes32 vs) private pure returns (address) {
        bytes32 s = vs & bytes32(S_MASK);
        if (uint256(s) > HALF_CURVE_ORDER) return address(0);
        uint8 v = uint8(uint256(vs) >> 255) + 27;
        return ecrecover(digest, v, r, s);
    }

    /// @dev Set bits of a 32-bit word (SWAR): pairs, nibbles, bytes, then the byte sums in the top byte.
    function _popcount(uint32 bits) private pure returns (uint256) {
        uint256 x = bits;
        x = x - ((x >> 1) & 0x55555555);
        x = (x & 0x33333333) + ((x >> 2) & 0x33333333);
        x = (x + (x >> 4)) & 0x0F0F0F0F;
        return (x * 0x01010101 >> 24) & 0xFF;
    }
}
