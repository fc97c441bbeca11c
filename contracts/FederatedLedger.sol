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
    /// @notice A registered node pinned its update for a round.
    event UpdateSubmitted(uint256 indexed round, address indexed node, bytes32 indexed updateHash, uint64 numSamples);
    /// @notice The aggregator refused a submitted update; `reasonCode` says why (see the client's RejectReason).
    event UpdateRejected(uint256 indexed round, address indexed node, bytes32 indexed updateHash, uint16 reasonCode);
    /// @notice A round closed without a new model (e.g. every update was rejected).
    event RoundAbandoned(uint256 indexed round, uint16 reasonCode);

    // ------------------------------------------------------------------ storage

    uint8 private immutable _attestationQuorum;

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
        if (_submissions[round][msg.sender] != bytes32(0)) revert LedgerAlreadySubmitted(round, msg.sender);
        _submissions[round][msg.sender] = updateHash;
        emit UpdateSubmitted(round, msg.sender, updateHash, numSamples);
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

    /// @dev Set bits of a 32-bit word (SWAR): pairs, nibbles, bytes, then the byte sums in the top byte.
    function _popcount(uint32 bits) private pure returns (uint256) {
        uint256 x = bits;
        x = x - ((x >> 1) & 0x55555555);
        x = (x & 0x33333333) + ((x >> 2) & 0x33333333);
        x = (x + (x >> 4)) & 0x0F0F0F0F;
        return (x * 0x01010101 >> 24) & 0xFF;
    }
}
