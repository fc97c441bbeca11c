"""The auditor's re-derivation (`ledger.audit.rederive`), its endpoint and its CLI, on a real federation's history.

One federation's history (genesis, three rounds with a rejection in round 2, then three rounds
committed by a lying aggregator) is built once per session; tests that damage blobs use a copy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import pytest
from federation import MAX_BYTES, History, shared_history
from support import DictStore
from flask.testing import FlaskClient

from ledger.api.app import create_app
from ledger.cli.main import main
from ledger.chain.client import LedgerClient
from ledger.core.hashing import sha256_hex
from ledger.audit.rederive import ChainFacts, FindingKind, Verdict, read_chain_facts, rederive, verify_version
from ledger.core.metadata import encode_genesis
from ledger.core.policy import FederationPolicy
from ledger.core.safe_json import canonical_json
from ledger.store.local import LocalBlobStore


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> History:
    return shared_history(tmp_path_factory)


def _reader(history: History) -> LedgerClient:
    """A key-less client, as an auditor or the API holds."""
    return LedgerClient(history.federation.chain.w3, history.federation.chain.address)


_FACTS: dict[str, ChainFacts] = {}


def _facts(history: History, model_hash: str) -> ChainFacts:
    """The chain's record of a version, read once (scanning the in-process chain's logs is the slow part)."""
    if model_hash not in _FACTS:
        facts = read_chain_facts(_reader(history), model_hash)
        assert facts is not None
        _FACTS[model_hash] = facts
    return _FACTS[model_hash]


def _verify(history: History, model_hash: str, store: LocalBlobStore | None = None) -> Verdict:
    return rederive(_facts(history, model_hash), store or history.federation.store, max_bytes=MAX_BYTES)


def _kinds(verdict: Verdict) -> set[FindingKind]:
    return {finding.kind for finding in verdict.findings}


def _round_parts(history: History, round_index: int) -> tuple[str, str, list[str]]:
    """(model hash, metadata hash, included update hashes) of an honest round, 1-based."""
    result = history.federation.results[round_index - 1]
    assert result.model_hash and result.metadata_hash
    return result.model_hash, result.metadata_hash, sorted(s.update_hash for s in result.included)


# --------------------------------------------------------------------------- honest history


def test_every_honest_version_verifies_including_genesis(history: History) -> None:
    reader, store = _reader(history), history.federation.store
    verdicts = [verify_version(reader, store, model_hash, max_bytes=MAX_BYTES) for model_hash in history.honest]

    assert [v.version for v in verdicts] == [0, 1, 2, 3]
    for verdict in verdicts:
        assert verdict.ok, verdict.to_json()
        assert verdict.rederived_hash == verdict.model_hash
    assert verdicts[0].kind == "genesis" and verdicts[0].updates == ()
    assert [len(v.updates) for v in verdicts[1:]] == [5, 4, 5]  # round 2 rejected the poisoned update
    assert verdicts[2].rule == {"name": "arc_nnm_trimmed_mean", "params": {"byzantine_fraction": 0.4}}  # the default


def test_verdict_json_shape(history: History) -> None:
    body = _verify(history, history.honest[1]).to_json()

    assert body["verified"] is True
    assert body["findings"] == []
    assert body["summary"] == "version 1 re-derived from 5 updates with arc_nnm_trimmed_mean: hash matches the chain"
    assert set(body) == {
        "model_hash", "version", "round", "kind", "verified", "summary", "parent_hash",
        "metadata_hash", "rederived_hash", "rule", "updates", "policy", "policy_source", "rejections", "findings",
    }  # fmt: skip
    assert body["policy_source"] == {"event": "genesis", "blob": _facts(history, history.honest[0]).version.metadata_hash, "from_round": 0}
    assert body["policy"] == {
        "rule": {"name": "arc_nnm_trimmed_mean", "params": {"byzantine_fraction": 0.4}},
        "limits": {"max_update_bytes": 64 * 1024 * 1024, "max_norm": 100.0, "max_num_samples": 10_000},
        "encoding": "f32",
        "privacy": None,
    }
    assert body["parent_hash"] == history.honest[0]


def test_unknown_version_has_no_verdict(history: History) -> None:
    assert verify_version(_reader(history), history.federation.store, sha256_hex(b"never committed")) is None


# --------------------------------------------------------------------------- damaged store


def test_altered_update_blob_is_named(history: History, tmp_path) -> None:
    store = history.federation.store_copy(tmp_path / "copy")
    model_hash, _, updates = _round_parts(history, 1)
    store.path_for(updates[2]).write_bytes(b"not the bytes the node pinned")

    verdict = _verify(history, model_hash, store)

    assert not verdict.ok
    [finding] = verdict.findings
    assert finding.kind is FindingKind.HASH_MISMATCH
    assert (finding.subject, finding.role) == (updates[2], "update")
    assert finding.expected == updates[2]
    assert finding.actual == sha256_hex(b"not the bytes the node pinned")
    assert verdict.rederived_hash is None  # an input is gone: nothing was re-derived


def test_altered_model_blob_is_named_even_though_rederivation_matches(history: History, tmp_path) -> None:
    store = history.federation.store_copy(tmp_path / "copy")
    model_hash, _, _ = _round_parts(history, 3)
    path = store.path_for(model_hash)
    path.write_bytes(path.read_bytes()[:-4] + b"\x00\x00\x80\x7f")

    verdict = _verify(history, model_hash, store)

    assert [(f.kind, f.subject, f.role) for f in verdict.findings] == [
        (FindingKind.HASH_MISMATCH, model_hash, "model")
    ]
    assert verdict.rederived_hash == model_hash


def test_deleted_metadata_is_a_missing_blob(history: History, tmp_path) -> None:
    store = history.federation.store_copy(tmp_path / "copy")
    model_hash, metadata_hash, _ = _round_parts(history, 2)
    store.path_for(metadata_hash).unlink()

    verdict = _verify(history, model_hash, store)

    assert [(f.kind, f.subject, f.role) for f in verdict.findings] == [
        (FindingKind.MISSING_BLOB, metadata_hash, "metadata")
    ]


def test_deleted_update_and_parent_are_missing_blobs(history: History, tmp_path) -> None:
    store = history.federation.store_copy(tmp_path / "copy")
    model_hash, _, updates = _round_parts(history, 2)
    parent_hash = history.honest[1]
    store.path_for(updates[0]).unlink()
    store.path_for(parent_hash).unlink()

    verdict = _verify(history, model_hash, store)

    missing = {(f.subject, f.role) for f in verdict.findings if f.kind is FindingKind.MISSING_BLOB}
    assert missing == {(updates[0], "update"), (parent_hash, "parent")}
    assert _kinds(verdict) == {FindingKind.MISSING_BLOB}


def test_genesis_with_a_deleted_blob_still_rebuilds_but_fails(history: History, tmp_path) -> None:
    store = history.federation.store_copy(tmp_path / "copy")
    store.path_for(history.honest[0]).unlink()

    verdict = _verify(history, history.honest[0], store)

    assert [(f.kind, f.role) for f in verdict.findings] == [(FindingKind.MISSING_BLOB, "model")]
    assert verdict.rederived_hash == history.honest[0]


# --------------------------------------------------------------------------- a lying aggregator


def test_metadata_lying_about_the_rule_is_a_rederived_mismatch_and_not_the_pinned_rule(history: History) -> None:
    verdict = _verify(history, history.lies["rule"])

    assert not verdict.ok
    pinned, finding = verdict.findings
    assert pinned.kind is FindingKind.RULE_NOT_PINNED
    policy = history.federation.aggregator.config.policy
    assert (pinned.expected, pinned.actual) == (
        {"name": policy.rule, "params": policy.rule_call_params()},
        {"name": "coordinate_median", "params": {}},
    )
    assert finding.kind is FindingKind.REDERIVED_MISMATCH
    assert finding.expected == history.lies["rule"]
    assert finding.actual == verdict.rederived_hash != history.lies["rule"]
    assert verdict.rule == {"name": "coordinate_median", "params": {}}


def test_metadata_naming_another_update_breaks_the_root(history: History) -> None:
    verdict = _verify(history, history.lies["update"])
    stranger = history.federation.results[0].included[0].update_hash

    kinds = [f.kind for f in verdict.findings]
    assert FindingKind.ROOT_MISMATCH in kinds
    assert FindingKind.REDERIVED_MISMATCH in kinds
    [not_submitted] = [f for f in verdict.findings if f.kind is FindingKind.NOT_SUBMITTED]
    assert not_submitted.subject == stranger
    assert FindingKind.COUNT_MISMATCH not in kinds  # same number of updates, different set


def test_metadata_inflating_a_sample_count_is_caught_against_the_chain(history: History) -> None:
    verdict = _verify(history, history.lies["samples"])

    # The model itself was merged with the chain's counts, so it re-derives; the metadata is still wrong.
    [finding] = verdict.findings
    assert finding.kind is FindingKind.SUBMISSION_MISMATCH
    assert finding.actual == finding.expected * 10
    assert verdict.rederived_hash == history.lies["samples"]


def test_facts_that_disagree_with_the_metadata(history: History) -> None:
    model_hash, _, _ = _round_parts(history, 2)
    facts = _facts(history, model_hash)
    tampered = ChainFacts(
        version=facts.version,
        committed=facts.committed,
        submissions=facts.submissions,
        rejections=(),  # as if the chain had no record of round 2's rejection
    )

    verdict = rederive(tampered, history.federation.store, max_bytes=MAX_BYTES)

    # The poisoned submission is now neither included nor (on this chain) rejected: censored.
    assert _kinds(verdict) == {FindingKind.REJECTIONS_MISMATCH, FindingKind.CENSORED_SUBMISSION}


# --------------------------------------------------------------------------- judging crafted records (pure)


def _with_metadata(history: History, round_index: int, edit) -> tuple[ChainFacts, DictStore]:
    """Round `round_index`'s facts as if its aggregator had committed `edit(metadata)` instead."""
    model_hash, metadata_hash, _ = _round_parts(history, round_index)
    facts = _facts(history, model_hash)
    source = history.federation.store
    genesis_metadata = facts.committed[history.honest[0]].metadata_hash  # pins the policy updates decode by
    store = DictStore(
        {name: source.get(name) for name in [model_hash, facts.version.parent_hash, metadata_hash, genesis_metadata]}
    )
    for event in facts.submissions:
        store.put(source.get(event.update_hash))
    edited = edit(json.loads(source.get(metadata_hash)))
    new_hash = store.put(edited if isinstance(edited, bytes) else canonical_json(edited))
    return replace(facts, version=replace(facts.version, metadata_hash=new_hash)), store


def _set(path: str, value):
    def edit(metadata):
        *parents, last = path.split(".")
        target = metadata
        for key in parents:
            target = target[key]
        target[last] = value
        return metadata

    return edit


@pytest.mark.parametrize(
    ("edit", "kind"),
    [
        (lambda m: b"\xff not json", FindingKind.METADATA_MALFORMED),
        (lambda m: b"[" * 100_000 + b"]" * 100_000, FindingKind.METADATA_MALFORMED),
        (_set("format", "someone-else/1"), FindingKind.METADATA_MALFORMED),
        (_set("included", "all of them"), FindingKind.METADATA_MALFORMED),
        (_set("kind", "genesis"), FindingKind.METADATA_MALFORMED),
        (_set("round", 99), FindingKind.METADATA_MISMATCH),
        (_set("task_spec", "ab" * 32), FindingKind.METADATA_MISMATCH),
        (_set("rule.name", "mean_of_my_choice"), FindingKind.RULE_UNKNOWN),
        (_set("rule.params", {"trim_ratio": "a lot"}), FindingKind.AGGREGATION_FAILED),
        (_set("rule.params", {"num_byzantine": 10**30}), FindingKind.AGGREGATION_FAILED),
    ],
    ids=[
        "not-utf8-json", "nested-too-deep", "other-format", "included-not-a-list", "kind-genesis",
        "other-round", "other-task-spec", "unknown-rule", "ill-typed-param", "absurd-param",
    ],
)  # fmt: skip
def test_crafted_metadata_is_a_finding_never_an_exception(history: History, edit, kind: FindingKind) -> None:
    facts, store = _with_metadata(history, 1, edit)

    verdict = rederive(facts, store, max_bytes=MAX_BYTES)

    assert not verdict.ok
    assert kind in _kinds(verdict), verdict.to_json()


def test_an_included_blob_that_is_not_safetensors(history: History) -> None:
    garbage = b"\x00" * 64
    garbage_hash = sha256_hex(garbage)

    def include_garbage(metadata):
        metadata["included"][0]["update_hash"] = garbage_hash
        return metadata

    facts, store = _with_metadata(history, 1, include_garbage)
    store.put(garbage)

    verdict = rederive(facts, store, max_bytes=MAX_BYTES)

    # The pinned validation refuses it, with the reason the aggregator would have recorded.
    malformed = [f for f in verdict.findings if f.kind is FindingKind.BLOB_MALFORMED]
    assert [(f.subject, f.role, f.actual) for f in malformed] == [(garbage_hash, "update", "malformed")]
    assert {FindingKind.ROOT_MISMATCH, FindingKind.NOT_SUBMITTED} <= _kinds(verdict)


@pytest.mark.parametrize(
    ("seed", "kind"), [(1, FindingKind.REDERIVED_MISMATCH), (10**30, FindingKind.METADATA_MALFORMED)]
)
def test_genesis_metadata_naming_another_seed(history: History, seed: int, kind: FindingKind) -> None:
    genesis = history.honest[0]
    store = DictStore({genesis: history.federation.store.get(genesis)})
    pinned = history.federation.aggregator.spec
    metadata_hash = store.put(encode_genesis(seed=seed, policy=FederationPolicy(rule="fedavg"), task=pinned))
    facts = _facts(history, genesis)

    verdict = rederive(replace(facts, version=replace(facts.version, metadata_hash=metadata_hash)), store)

    assert [f.kind for f in verdict.findings] == [kind]


def _genesis_pinning(history: History, **changes) -> tuple[ChainFacts, DictStore]:
    """Genesis's facts as if its metadata had pinned the task spec with `changes`."""
    genesis = history.honest[0]
    store = DictStore({genesis: history.federation.store.get(genesis)})
    spec = replace(history.federation.aggregator.spec, **changes)
    metadata_hash = store.put(encode_genesis(seed=0, policy=FederationPolicy(rule="fedavg"), task=spec))
    facts = _facts(history, genesis)
    return replace(facts, version=replace(facts.version, metadata_hash=metadata_hash)), store


def test_genesis_of_a_task_not_installed_says_what_to_install(history: History) -> None:
    facts, store = _genesis_pinning(history, name="someone-elses-task", version="4.2", code_sha256="ab" * 32)

    verdict = rederive(facts, store)

    [finding] = verdict.findings
    assert finding.kind is FindingKind.TASK_NOT_INSTALLED
    assert finding.expected == {"name": "someone-elses-task", "version": "4.2", "code_sha256": "ab" * 32}
    assert "install task 'someone-elses-task' version '4.2' (code sha256 " + "ab" * 32 + ")" in finding.detail
    assert verdict.rederived_hash is None


def test_a_pinned_task_name_is_never_imported_as_a_module(history: History, tmp_path, monkeypatch) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "planted_by_metadata.py").write_text(f"open({str(marker)!r}, 'w').close()\nTASK = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    facts, store = _genesis_pinning(history, name="planted_by_metadata:TASK")

    verdict = rederive(facts, store)

    assert [f.kind for f in verdict.findings] == [FindingKind.TASK_NOT_INSTALLED]
    assert "no installed task is named 'planted_by_metadata:TASK'" in verdict.findings[0].detail
    assert not marker.exists()


def test_genesis_pinning_other_code_names_the_differing_field(history: History) -> None:
    facts, store = _genesis_pinning(history, code_sha256="cd" * 32)

    verdict = rederive(facts, store)

    [finding] = verdict.findings
    assert finding.kind is FindingKind.TASK_MISMATCH
    assert "differs from the one pinned at genesis at task.code_sha256" in finding.detail
    assert finding.expected == "cd" * 32 and finding.actual == history.federation.aggregator.spec.code_sha256


def test_an_included_blob_whose_header_nests_too_deep_is_a_finding_not_a_crash(history: History) -> None:
    # web3's py_ecc raises the recursion limit to 100,000: json.loads on this header would segfault.
    header = b"[" * 200_000 + b"]" * 200_000
    hostile = len(header).to_bytes(8, "little") + header
    hostile_hash = sha256_hex(hostile)

    def include_hostile(metadata):
        metadata["included"][0]["update_hash"] = hostile_hash
        return metadata

    facts, store = _with_metadata(history, 1, include_hostile)
    store.put(hostile)

    verdict = rederive(facts, store, max_bytes=MAX_BYTES)

    assert (FindingKind.BLOB_MALFORMED, hostile_hash) in {(f.kind, f.subject) for f in verdict.findings}


def test_a_parent_that_is_not_a_committed_version(history: History) -> None:
    facts, store = _with_metadata(history, 2, lambda m: m)
    stranger = sha256_hex(b"not a version")
    orphan = replace(facts, version=replace(facts.version, parent_hash=stranger))

    verdict = rederive(orphan, store, max_bytes=MAX_BYTES)

    assert (FindingKind.PARENT_MISSING, stranger) in {(f.kind, f.subject) for f in verdict.findings}


# --------------------------------------------------------------------------- the endpoint


@pytest.fixture
def api(history: History) -> Iterator[FlaskClient]:
    app = create_app(store=history.federation.store, ledger=_reader(history), max_blob_bytes=MAX_BYTES)
    with app.test_client() as client:
        yield client


def test_endpoint_verifies_an_honest_version(api: FlaskClient, history: History) -> None:
    response = api.get(f"/api/v1/models/{history.honest[3]}/verify")

    assert response.status_code == 200
    assert response.json["verified"] is True
    assert response.json["version"] == 3


def test_endpoint_reports_a_lie_with_200(api: FlaskClient, history: History) -> None:
    response = api.get(f"/api/v1/models/{history.lies['rule']}/verify")

    assert response.status_code == 200
    assert response.json["verified"] is False
    assert [f["kind"] for f in response.json["findings"]] == ["rule_not_pinned", "rederived_mismatch"]


@pytest.mark.parametrize("bad", ["abc", "0x" + "a" * 63, "g" * 64, "a" * 65])
def test_endpoint_refuses_malformed_hashes(api: FlaskClient, bad: str) -> None:
    response = api.get(f"/api/v1/models/{bad}/verify")

    assert response.status_code == 400
    assert response.json["error"] == "Bad Request"


def test_endpoint_takes_hashes_as_the_rest_of_the_api(api: FlaskClient, history: History) -> None:
    response = api.get(f"/api/v1/models/0x{history.honest[1].upper()}/verify")

    assert response.status_code == 200
    assert response.json["model_hash"] == history.honest[1]


def test_endpoint_404_for_an_unknown_version(api: FlaskClient) -> None:
    unknown = sha256_hex(b"never committed")

    response = api.get(f"/api/v1/models/{unknown}/verify")

    assert response.status_code == 404
    assert response.json["model_hash"] == unknown


def test_endpoint_503_without_a_ledger(history: History) -> None:
    app = create_app(store=history.federation.store, ledger=None, max_blob_bytes=MAX_BYTES)

    response = app.test_client().get(f"/api/v1/models/{history.honest[0]}/verify")

    assert response.status_code == 503


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli_chain(history: History, monkeypatch) -> None:
    """`fedledger audit verify` against the in-process chain (it has no RPC URL to connect to)."""
    monkeypatch.setattr("ledger.cli.wiring.ledger_client", lambda args, account: _reader(history))


@pytest.mark.usefixtures("cli_chain")
def test_cli_exit_0_when_verified(history: History, capsys) -> None:
    folder = str(history.federation.blobs_dir)

    code = main(["audit", "verify", "0x" + history.honest[2].upper(), "--blobs-dir", folder])

    assert code == 0
    assert capsys.readouterr().out.startswith("VERIFIED  version 2 re-derived from 4 updates with arc_nnm_trimmed_mean")


@pytest.mark.usefixtures("cli_chain")
def test_cli_exit_1_printing_findings(history: History, capsys, tmp_path) -> None:
    store = history.federation.store_copy(tmp_path / "copy")
    _, metadata_hash, _ = _round_parts(history, 1)
    store.path_for(metadata_hash).unlink()

    code = main(["audit", "verify", history.honest[1], "--blobs-dir", str(store.root)])

    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("FAILED    version 1 NOT verified: 1 finding(s) (missing_blob)")
    assert f"- missing_blob: metadata {metadata_hash}" in out


@pytest.mark.usefixtures("cli_chain")
def test_cli_verifies_the_latest_version_with_a_task_named_by_reference(history: History, capsys) -> None:
    folder = str(history.federation.blobs_dir)

    assert main(["audit", "verify", "latest", "--blobs-dir", folder, "--json"]) == 1  # the last version lies
    assert json.loads(capsys.readouterr().out)["model_hash"] == history.lies["samples"]
    code = main(["audit", "verify", history.honest[0], "--blobs-dir", folder, "--task", "ledger.tasks.digits:DIGITS_MLP"])
    assert code == 0
    assert capsys.readouterr().out.startswith("VERIFIED  version 0 (genesis) rebuilt from its pinned task and seed")


@pytest.mark.usefixtures("cli_chain")
def test_cli_unknown_version_is_an_error(history: History, capsys) -> None:
    code = main(["audit", "verify", sha256_hex(b"nope"), "--blobs-dir", str(history.federation.blobs_dir)])

    assert code == 1
    assert "is not a committed model version" in capsys.readouterr().err
