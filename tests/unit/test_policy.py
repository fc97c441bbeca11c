"""The federation policy pinned at genesis: every rule parameter and limit, and back, validated."""

from __future__ import annotations

import pytest

from aggregator.coordinator import AggregatorConfig
from ledger.core.metadata import GenesisRecord, decode, encode_genesis
from ledger.core.policy import DEFAULT_RULE, FederationPolicy, PolicyError
from ledger.tasks.spec import task_spec


def test_the_default_policy_pins_the_robust_rule_with_every_parameter_and_the_sample_cap() -> None:
    config = AggregatorConfig()
    policy = config.policy

    record = decode(encode_genesis(seed=0, policy=policy, task=task_spec(config.task, config.hyperparameters)))

    assert isinstance(record, GenesisRecord) and record.policy == policy
    assert record.task == task_spec(config.task) and record.task.name == "digits-mlp"  # pinned beside it
    assert policy.to_json() == {
        "rule": {"name": DEFAULT_RULE, "params": {"byzantine_fraction": 0.4}},
        "limits": {"max_update_bytes": 64 * 1024 * 1024, "max_norm": 100.0, "max_num_samples": 10_000},
        "encoding": "f32",
        "privacy": None,
    }


def test_sample_weighted_rules_run_and_record_the_cap_others_do_not_get_it() -> None:
    fedavg = AggregatorConfig(rule="fedavg", max_num_samples=300).policy
    krum = AggregatorConfig(rule="krum", rule_params={"num_byzantine": 1}).policy
    median = AggregatorConfig(rule="coordinate_median").policy

    assert fedavg.rule_call_params() == {"max_samples": 300}
    assert krum.rule_call_params() == {"num_byzantine": 1, "num_selected": 1, "max_samples": 10_000}
    assert median.rule_call_params() == {}


def test_a_policy_pinned_before_the_cap_still_reads_and_a_bad_cap_is_refused() -> None:
    old = {"rule": {"name": "fedavg", "params": {}}, "limits": {"max_update_bytes": 10, "max_norm": 1.0}}

    assert FederationPolicy.from_json(old).max_num_samples is None
    assert FederationPolicy.from_json(old).rule_call_params() == {}
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(PolicyError, match="max_num_samples"):
            FederationPolicy.from_json({**old, "limits": {**old["limits"], "max_num_samples": bad}})


@pytest.mark.parametrize("limits", [{"max_norm": -1.0}, {"max_norm": float("nan")}, {"max_norm": float("inf")}, {"max_update_bytes": 0}, {"max_update_bytes": -1048576}])
def test_a_policy_with_a_bad_limit_cannot_be_built_so_it_is_never_pinned(limits: dict[str, float]) -> None:
    with pytest.raises(PolicyError, match=next(iter(limits))):
        FederationPolicy(rule=DEFAULT_RULE, **limits)  # type: ignore[arg-type]
