"""Tasks in a federation on the in-process chain: every built-in task, pinned specs, partial updates, the commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_node.node import EdgeNode, TrainingConfig
from ledger.audit.rederive import FindingKind, verify_version
from ledger.chain.rounds import round_submissions
from ledger.cli.federation import InProcessFederation, start_federation
from ledger.cli.main import main
from ledger.core.aggregation import Update, aggregate
from ledger.core.manifest import with_frozen
from ledger.core.merkle import merkle_root
from ledger.core.metadata import IncludedUpdate, encode_round
from ledger.core.policy import PrivacyPolicy
from ledger.core.reasons import RejectReason
from ledger.core.serialization import deserialize_tensors, serialize_tensors
from ledger.core.task_spec import TaskSpecMismatch
from ledger.store.local import LocalBlobStore
from ledger.tasks.digits import DIGITS_CNN, DIGITS_MLP
from ledger.tasks.finetune import DIGITS_FINETUNE
from ledger.tasks.registry import load_task
from ledger.tasks.spec import task_spec

MAX_BYTES = 1 << 20
QUICK = {"epochs": 1}  # accuracy floors are `fedledger bench tasks`'s to prove; these tests prove the plumbing


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    torch.set_num_threads(1)  # small models: a second thread only adds overhead on 2 cores


def _federation(task, tmp_path: Path, *, nodes: int = 2, min_updates: int | None = None, **config) -> InProcessFederation:
    store = LocalBlobStore(tmp_path / "blobs", max_bytes=4 * MAX_BYTES)
    return start_federation(
        task, store, nodes=nodes, max_model_bytes=MAX_BYTES, hyperparameters=QUICK, min_updates=min_updates or nodes, **config
    )


@pytest.mark.parametrize(
    ("name", "rule", "params", "nodes"),
    [
        ("digits-mlp", "fedavg", {}, 2),  # streaming FedAvg over full models
        ("digits-cnn", "coordinate_median", {}, 2),
        ("breast-cancer-logreg", "trimmed_mean", {"trim_ratio": 0.2}, 2),  # a collected rule over partial updates
        ("digits-finetune", "fedavg", {}, 2),  # streaming FedAvg over partial updates
        # The robust default over partial updates; 3 nodes, so f = 1 and clipping, mixing and trimming all act.
        ("digits-finetune", "arc_nnm_trimmed_mean", {}, 3),
    ],
)
def test_each_built_in_task_federates_and_every_version_re_derives(
    tmp_path: Path, name: str, rule: str, params: dict, nodes: int
) -> None:
    task = load_task(name)
    federation = _federation(task, tmp_path, nodes=nodes, rule=rule, rule_params=params)
    genesis = federation.chain.admin.genesis_hash()

    results = [federation.run_round() for _ in range(2)]

    assert all(len(r.included) == nodes and not r.rejected for r in results)
    assert {"accuracy", "loss"} <= set(results[-1].metrics)
    for model_hash in [genesis] + [r.model_hash for r in results]:
        verdict = verify_version(federation.chain.admin, federation.store, model_hash, max_bytes=MAX_BYTES)
        assert verdict is not None and verdict.ok, verdict.to_json()
        assert verdict.rederived_hash == model_hash
    spec = federation.aggregator.spec
    frozen = [t.name for t in spec.tensors if not t.trainable]
    first = deserialize_tensors(federation.store.get(genesis), max_bytes=MAX_BYTES)
    last = deserialize_tensors(federation.store.get(results[-1].model_hash), max_bytes=MAX_BYTES)
    update = deserialize_tensors(federation.store.get(results[-1].included[0].update_hash), max_bytes=MAX_BYTES)
    assert sorted(update) == list(spec.trainable_names)  # only trainable tensors travel
    assert all(torch.equal(first[name], last[name]) for name in frozen)  # frozen ones stay the genesis's, bit for bit
    if name == "digits-finetune":  # fine-tuning on device: only the head travels
        update_bytes = len(federation.store.get(results[-1].included[0].update_hash))
        assert len(federation.store.get(results[-1].model_hash)) >= 10 * update_bytes


def test_a_node_with_another_spec_is_refused_naming_the_field_and_submits_nothing(tmp_path: Path) -> None:
    federation = _federation(DIGITS_MLP, tmp_path)
    client = federation.chain.nodes[0]
    stray = EdgeNode(
        client,
        federation.store,
        federation.nodes[0].shard,
        TrainingConfig(task=DIGITS_MLP, hyperparameters={"epochs": 2}, seed=0),
        max_model_bytes=MAX_BYTES,
    )
    info = federation.aggregator.open_round()

    with pytest.raises(TaskSpecMismatch, match=r"at task\.hyperparameters\.epochs \(pinned 1, this node has 2\)"):
        stray.participate(info.round)

    assert client.submission_of(info.round, stray.address) is None
    other_task = EdgeNode(
        client, federation.store, federation.nodes[0].shard, TrainingConfig(task=DIGITS_CNN, hyperparameters=QUICK),
        max_model_bytes=MAX_BYTES,
    )  # fmt: skip
    with pytest.raises(TaskSpecMismatch, match=r"at task\.name \(pinned 'digits-mlp', this node has 'digits-cnn'\)"):
        other_task.participate(info.round)


def test_an_aggregator_restarted_with_another_task_refuses_the_chain(tmp_path: Path) -> None:
    from aggregator.coordinator import Aggregator, AggregatorConfig

    federation = _federation(DIGITS_MLP, tmp_path, nodes=1)
    restarted = Aggregator(
        federation.chain.admin,
        federation.store,
        DIGITS_MLP.bundled_data().test,
        AggregatorConfig(task=DIGITS_MLP, hyperparameters={"epochs": 1, "lr": 0.2}),
    )

    with pytest.raises(TaskSpecMismatch, match=r"this aggregator's task differs .* at task\.hyperparameters\.lr"):
        restarted.ensure_genesis()


def test_fine_tuning_composes_with_the_pinned_encoding_and_dp(tmp_path: Path) -> None:
    # Only the head travels, as an int8 change; the nodes train it with DP-SGD (Opacus), the
    # backbone frozen; every version still re-derives bit for bit.
    privacy = PrivacyPolicy(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5, epsilon_budget="20.000000", epochs=1)
    federation = _federation(DIGITS_FINETUNE, tmp_path, encoding="int8", privacy=privacy)

    result = federation.run_round()

    assert len(result.included) == 2 and set(result.epsilons) == {node.address for node in federation.nodes}
    update = federation.store.get(result.included[0].update_hash)
    assert len(update) < 4 * 650  # 650 int8 values and two scales: less than the head's float32 values alone
    for model_hash in (federation.chain.admin.genesis_hash(), result.model_hash):
        verdict = verify_version(federation.chain.admin, federation.store, model_hash, max_bytes=MAX_BYTES)
        assert verdict is not None and verdict.ok, verdict.to_json()


def test_a_fine_tuning_update_carrying_the_backbone_is_rejected(tmp_path: Path) -> None:
    backbone = {k: v for k, v in DIGITS_FINETUNE.build_model(0).state_dict().items() if k.startswith("backbone.")}
    federation = _federation(
        DIGITS_FINETUNE, tmp_path, min_updates=1, node_hooks={1: {"transform": lambda weights: {**weights, **backbone}}}
    )

    result = federation.run_round()

    assert len(result.included) == 1
    [(_, reason, detail)] = result.rejected
    assert reason is RejectReason.NAME_MISMATCH and "unexpected ['backbone.0.bias'" in detail


def test_a_model_whose_frozen_tensors_were_altered_fails_re_derivation(tmp_path: Path) -> None:
    federation = _federation(DIGITS_FINETUNE, tmp_path, rule="fedavg")  # the rule and its params are honest
    admin, store, spec = federation.chain.admin, federation.store, federation.aggregator.spec
    params = federation.aggregator.config.policy.rule_call_params()
    info = federation.aggregator.open_round()
    for node in federation.nodes:
        node.participate(info.round)
    submissions = sorted(round_submissions(admin, info.round), key=lambda s: s.update_hash)
    updates = [
        Update(s.update_hash, s.num_samples, deserialize_tensors(store.get(s.update_hash), max_bytes=MAX_BYTES))
        for s in submissions
    ]
    base = deserialize_tensors(store.get(info.base_model_hash), max_bytes=MAX_BYTES)
    base["backbone.0.bias"] = base["backbone.0.bias"] + 1e-3  # the lie: a "frozen" tensor moved
    model_hash = store.put(serialize_tensors(with_frozen(aggregate("fedavg", updates, **params), base, spec)))
    metadata = encode_round(
        round_number=info.round,
        base_model_hash=info.base_model_hash,
        task_spec=spec.spec_hash,
        rule="fedavg",
        rule_params=params,
        included=[IncludedUpdate(s.update_hash, s.node, s.num_samples) for s in submissions],
        rejected=[],
        metrics={},
    )
    root = merkle_root(bytes.fromhex(s.update_hash) for s in submissions)
    admin.finalize_round(info.round, model_hash, root, len(submissions), store.put(metadata))

    verdict = verify_version(admin, store, model_hash, max_bytes=MAX_BYTES)

    assert [f.kind for f in verdict.findings] == [FindingKind.REDERIVED_MISMATCH]
    assert "frozen tensors from the parent" in verdict.findings[0].detail


# --------------------------------------------------------------------------- the commands


def test_node_run_refuses_bad_data_in_one_line_before_any_chain_call(tmp_path: Path, monkeypatch, capsys) -> None:
    def no_chain(*args, **kwargs):
        raise AssertionError("the node touched the chain before checking its data")

    monkeypatch.setattr("ledger.cli.wiring.ledger_client", no_chain)
    bad = tmp_path / "node-0.npz"
    np.savez(bad, x=np.zeros((1, 64)), y=np.array([12]))

    code = main(["node", "run", "--task", "digits-mlp", "--data", str(bad), "--dev-key", "1"])

    err = capsys.readouterr().err
    assert code == 1
    assert err == f"fedledger: error: {bad}: label 12 at row 0 is not a class of this task (0..9)\n"


def test_aggregator_run_refuses_unusable_test_data_before_any_chain_call(tmp_path: Path, monkeypatch, capsys) -> None:
    def no_chain(*args, **kwargs):
        raise AssertionError("the aggregator touched the chain before checking its test data")

    monkeypatch.setattr("ledger.cli.wiring.ledger_client", no_chain)
    missing = tmp_path / "test.csv"

    code = main(["aggregator", "run", "--task", "breast-cancer-logreg", "--test-data", str(missing), "--dev-key", "0"])

    assert code == 1
    assert capsys.readouterr().err == f"fedledger: error: {missing}: no such file\n"


def test_task_list_show_and_data_split(tmp_path: Path, capsys) -> None:
    assert main(["task", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("digits-mlp", "digits-cnn", "digits-finetune", "breast-cancer-logreg"))

    assert main(["task", "show", "digits-mlp", "--epochs", "1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["spec_hash"] == task_spec(DIGITS_MLP, {"epochs": 1}).spec_hash
    assert shown["spec"]["hyperparameters"]["epochs"] == 1

    out = tmp_path / "data"
    assert main(["data", "split", "--task", "breast-cancer-logreg", "--nodes", "3", "--non-iid", "--out", str(out)]) == 0
    capsys.readouterr()
    files = sorted(path.name for path in out.iterdir())
    assert files == ["node-0.csv", "node-1.csv", "node-2.csv", "test.csv"]
    task = load_task("breast-cancer-logreg")
    shares = [task.load_data(out / f"node-{k}.csv") for k in range(3)]
    assert sum(len(share) for share in shares) == len(task.bundled_data().train)
    assert main(["data", "split", "--task", "breast-cancer-logreg", "--nodes", "3", "--out", str(out)]) == 1
    assert "exists: choose an empty --out (nothing was written)" in capsys.readouterr().err


def test_demo_federates_a_chosen_task_in_memory(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FEDLEDGER_HOME", str(tmp_path / "var"))

    code = main(["demo", "--chain", "memory", "--task", "breast-cancer-logreg", "--nodes", "3", "--rounds", "2", "--epochs", "1"])

    out, progress = capsys.readouterr()
    assert code == 0
    assert "task breast-cancer-logreg" in progress  # the demo's progress lines are on stderr
    assert out.count("3 included, 0 rejected") == 2
