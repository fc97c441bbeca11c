"""The aggregation, round and updates benchmarks run end to end on small inputs (their figures are not checked here)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ledger.cli.bench.aggregate import measure_aggregate
from ledger.cli.bench.robustness import markdown
from ledger.cli.bench.robustness import measure as measure_robustness
from ledger.cli.bench.round import NodeRound, critical_path, measure_round
from ledger.cli.bench.updates import measure_updates


def test_aggregate_bench_reports_every_variant_and_matches_the_reference_fedavg(tmp_path) -> None:
    report = measure_aggregate(updates=3, parameters=8000, repetitions=1, workdir=tmp_path)

    assert report["identical_to_reference_fedavg"] is True
    assert set(report["seconds_median"]) == {"unverified", "unverified_pipelined", "unverified_zero_copy", "verified"}
    assert set(report["hashing_MBps"]) >= {"project_sha256_hex", "hashlib_sha256"}
    assert list(tmp_path.iterdir()) == []  # the temporary store is gone


def test_the_critical_path_splits_a_round_into_phases_that_add_up() -> None:
    # Prepare: open at 0 (returns at 0.05); the last node notices at 0.1 and lands at 1.0 after
    # 0.05 s of reads, 0.1 s of storage, 0.6 s of training and 0.15 s of chain; the aggregator
    # notices at 1.05 and closes at 1.45.
    last = NodeRound(
        node=3, round=1, outcome="submitted", seen=0.1, done=1.0,
        train_seconds=0.6, store_seconds=0.1, chain_seconds=0.15, cpu_seconds=0.0,
    )  # fmt: skip
    timings = {"verify": 0.1, "chain": 0.1, "aggregate": 0.05, "store": 0.1}

    # Execute
    phases = critical_path(
        opened_at=0.0, open_returned_at=0.05, submissions_seen_at=1.05, closed_at=1.45, close_timings=timings, last=last
    )

    # Assert
    assert phases["training"] == 0.6
    assert phases["aggregation"] == 0.05
    assert phases["chain"] == pytest.approx(0.05 + 0.05 + 0.15 + 0.1 + 0.05)
    assert phases["hashing_storage"] == pytest.approx(0.1 + 0.1 + 0.1)
    assert phases["waiting"] == pytest.approx(0.05 + 0.05)
    assert phases["sum_of_phases"] == pytest.approx(1.45)
    assert phases["ledger_share"] == pytest.approx(1.45 - 0.6 - 0.05)


def test_tasks_bench_reports_each_task_it_ran() -> None:
    from ledger.cli.bench.tasks import measure_tasks

    report = measure_tasks(("breast-cancer-logreg",), nodes=2, rounds=1)

    [(name, task)] = report["tasks"].items()
    assert name == "breast-cancer-logreg"
    assert task["all_versions_verified"] is True
    assert task["update_bytes"] < task["model_bytes"]  # the frozen standardization does not travel
    assert len(task["accuracy_per_round"]) == 1 and task["final_accuracy"] == task["accuracy_per_round"][0]


@pytest.mark.devnet
def test_round_bench_runs_on_anvil_and_cleans_up() -> None:
    report = measure_round(nodes=2, rounds=1, epochs=1)

    assert report["nodes"] == 2 and len(report["per_round"]) == 2  # the warm-up round, then one
    assert set(report["critical_path_median"]) >= {"training", "chain", "hashing_storage", "waiting", "aggregation"}


@pytest.mark.devnet
def test_idle_bench_runs_small_and_reports_each_part() -> None:
    from ledger.cli.bench.idle import measure_idle

    report = measure_idle(nodes=3, processes=1, window=1.0, wakes=5, histories=(40,), persisted=())

    assert set(report["idle_federation"]) == {"subscription", "polling_fallback"}
    assert report["per_wake_by_history"]["40"]["blocks"] >= 40
    shares = [report["idle_federation"][mode]["anvil_core_share"] for mode in ("subscription", "polling_fallback")]
    assert all(isinstance(share, float) and share >= 0 for share in shares)


def test_scale_bench_runs_a_small_federation_and_history_end_to_end() -> None:
    from ledger.cli.bench.scale import measure_scale

    report = measure_scale(
        nodes=[4], rounds=1, drivers=1, threads=2, reject_every=4, api_requests=3,
        history_rounds=2, history_nodes=3, databases=["sqlite"],
    )  # fmt: skip

    (four,) = report["by_nodes"]
    (round_one,) = four["per_round"]
    assert (round_one["submissions"], round_one["included"], round_one["rejected"]) == (4, 3, 1)
    assert round_one["gas"]["submit_median"] > 21_000 and round_one["gas"]["round_total"] > 4 * 21_000
    assert set(round_one["phases"]) >= {"event_read", "intake_wall", "store", "finalize", "notice"}
    assert round_one["aggregator_rss_mib"]["peak_in_round"] is None or round_one["aggregator_rss_mib"]["peak_in_round"] > 50
    assert four["api"]["round_page"]["p99_ms"] > 0 and four["api"]["indexed_events"] > 4
    history = report["history"]
    assert history["events"] > 2 * 3 and history["by_database"]["sqlite"]["index_events_per_second"] > 0
    assert set(history["by_database"]["sqlite"]["api"]) == {"lineage", "round_page_last", "round_page_first", "summary"}


def test_node_counts_parse_and_refuse_nonsense() -> None:
    import argparse

    from ledger.cli.bench.scale import parse_counts

    assert parse_counts("10,100,1000") == [10, 100, 1000]
    for bad in ("", "ten", "10,-1", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_counts(bad)


def test_robustness_bench_runs_attacks_through_the_intake_and_tells_the_rules_apart() -> None:
    report = measure_robustness(["fedavg", "arc_nnm_trimmed_mean"], ["sign_flip"], ["iid"], [1], rounds=1)

    cells = {(r["rule"], r["attack"]): r for r in report["results"]}
    assert set(cells) == {(rule, attack) for rule in ("fedavg", "arc_nnm_trimmed_mean") for attack in ("none", "sign_flip")}
    assert cells[("fedavg", "sign_flip")]["accuracy"] < 0.5 < cells[("arc_nnm_trimmed_mean", "sign_flip")]["accuracy"]
    assert report["default_rule"] == "arc_nnm_trimmed_mean" and report["meets_floor"]["fedavg"] is False
    table = markdown(report)
    assert table.splitlines()[0] == "| attack | of 5 | split | fedavg | arc_nnm_trimmed_mean |"
    assert "| sign_flip | 1 | iid | **" in table  # fedavg's cell, under the floor, in bold


def test_updates_bench_compares_encodings_and_runs_a_private_federation() -> None:
    report = measure_updates(nodes=2, rounds=1, epochs=1, repeats=1, dp_targets=(8.0,))

    encodings = report["encodings"]
    assert set(encodings) == {"f32", "f16", "int8"}
    assert all(figures["verified"] for figures in encodings.values())
    assert encodings["int8"]["update_bytes_median"] < encodings["f16"]["update_bytes_median"] < encodings["f32"]["update_bytes_median"]
    private = report["privacy"]["runs"]["epsilon_8"]
    assert private["verified"] and private["rejected_updates"] == 0
    assert Decimal(private["epsilon_recorded_after_last_round"]) <= Decimal("8")


@pytest.mark.devnet
def test_watch_bench_times_a_watcher_on_anvil() -> None:
    from ledger.cli.bench.watch import measure_watch

    report = measure_watch(node_counts=(2,), rounds=1, poll_seconds=0.05)

    [figures] = report["by_nodes"].values()
    assert figures["updates_per_version"] == 2
    assert 0 < figures["rederive_seconds"] <= figures["commit_to_attestation_seconds"]
    assert figures["blocks_after_commit"] >= 1
