"""`fedledger aggregator run`: the coordinator that opens, verifies, merges and commits rounds."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from aggregator.misbehaviour import MODES
    from ledger.core.aggregation import RULES
    from ledger.cli.policy_options import add_policy_arguments
    from ledger.core.policy import DEFAULT_MAX_NUM_SAMPLES, DEFAULT_RULE
    from ledger.cli.wiring import add_ledger_arguments, add_task_arguments, name_value

    aggregator = subparsers.add_parser("aggregator", help="run the aggregator (coordinator)")
    sub = aggregator.add_subparsers(dest="aggregator_command", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="commit genesis if needed, then open, verify, aggregate and commit rounds")
    add_ledger_arguments(run)
    add_task_arguments(run)
    run.add_argument("--test-data", type=Path, help="held-out evaluation data in the task's format (default: the task's bundled test split)")
    run.add_argument("--rounds", type=int, default=5, help="how many rounds to run")
    run.add_argument(
        "--rule", choices=sorted(RULES), default=DEFAULT_RULE, help=f"aggregation rule (default {DEFAULT_RULE}: robust)"
    )
    run.add_argument("--rule-param", type=name_value, action="append", default=[], metavar="NAME=VALUE",
                     help="rule parameter, e.g. trim_ratio=0.2 or num_byzantine=1 (repeatable)")
    run.add_argument("--min-updates", type=int, default=1, help="valid updates that let a round close before its deadline")
    run.add_argument("--round-seconds", type=int, default=60, help="submission window per round")
    run.add_argument("--max-norm", type=float, default=100.0, help="L2 bound on an update's change from the base")
    run.add_argument(
        "--max-num-samples",
        type=int,
        default=DEFAULT_MAX_NUM_SAMPLES,
        help=f"cap on the sample count an update is weighted by (default {DEFAULT_MAX_NUM_SAMPLES}; pinned at genesis)",
    )
    run.add_argument("--max-update-mb", type=float, default=64.0)
    run.add_argument("--register", action="append", default=[], metavar="ADDRESS", help="register a node first (admin only; repeatable)")
    run.add_argument("--model-seed", type=int, default=0, help="seed of the genesis model")
    run.add_argument(
        "--misbehave",
        choices=MODES,
        help="demo only: lie this way each round (aggregator.misbehaviour), for auditors to catch",
    )
    add_policy_arguments(run)
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ledger.cli.errors import CommandError
    from ledger.core.errors import LedgerError
    from ledger.cli.wiring import blob_store, ledger_client, load_data_file, resolve_task, signing_account

    from ledger.cli.policy_options import privacy_policy
    from ledger.cli.report import print_round
    from aggregator.coordinator import Aggregator, AggregatorConfig

    task, overrides = resolve_task(args)
    privacy = privacy_policy(args)
    try:  # the held-out data is read before anything touches the chain
        test_data = load_data_file(task, args.test_data) if args.test_data else task.bundled_data().test
    except LedgerError as exc:  # a task with no bundled data
        raise CommandError(str(exc)) from exc
    try:
        client = ledger_client(args, account=signing_account(args))
        store = blob_store(args, client)
        for address in args.register:
            if not client.is_node(address):
                client.register_node(address)
                print(f"registered node {address}", flush=True)
    except LedgerError as exc:
        raise CommandError(str(exc)) from exc
    config = AggregatorConfig(
        task=task,
        hyperparameters=overrides,
        rule=args.rule,
        rule_params=dict(args.rule_param),
        min_updates=args.min_updates,
        round_seconds=args.round_seconds,
        max_norm=args.max_norm,
        max_num_samples=args.max_num_samples,
        max_update_bytes=int(args.max_update_mb * 1024 * 1024),
        model_seed=args.model_seed,
        encoding=args.encoding,
        privacy=privacy,
    )
    if args.misbehave:
        from aggregator.misbehaviour import LyingAggregator

        aggregator: Aggregator = LyingAggregator(client, store, test_data, config, mode=args.misbehave)
    else:
        aggregator = Aggregator(client, store, test_data, config)
    try:
        genesis = aggregator.ensure_genesis()
    except LedgerError as exc:
        raise CommandError(str(exc)) from exc
    dp = "no DP" if privacy is None else f"DP σ {privacy.noise_multiplier}, ε budget {privacy.epsilon_budget}"
    print(
        f"aggregator {client.account.address}: ledger {client.address}, genesis {genesis}, "  # type: ignore[union-attr]
        f"task {task.name} (spec {aggregator.spec.spec_hash[:12]}), rule {args.rule}, encoding {args.encoding}, {dp}",
        flush=True,
    )
    for _ in range(args.rounds):
        try:
            result = aggregator.run_round()
        except LedgerError as exc:
            raise CommandError(f"round failed: {exc}") from exc
        print_round(result)
    return 0
