"""`fedledger aggregator run`: the coordinator that opens, verifies, merges and commits rounds.

It resumes from the chain: run it again after any crash and it finishes the open round (or opens
the next one) until round `--rounds` has closed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_rule_arguments(parser: argparse.ArgumentParser) -> None:
    """--rule and --rule-param, shared with the demo (the rule's name is checked before anything starts)."""
    from ledger.cli.wiring import name_value
    from ledger.core.policy import DEFAULT_RULE

    parser.add_argument(
        "--rule",
        default=DEFAULT_RULE,
        help=f"{DEFAULT_RULE} (default: robust), fedavg, coordinate_median, trimmed_mean or krum",
    )
    parser.add_argument(
        "--rule-param",
        type=name_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="rule parameter (repeatable), e.g. byzantine_fraction=0.4; defaults: trimmed_mean trim_ratio=0.2, krum num_byzantine=1",
    )


def checked_rule(args: argparse.Namespace) -> dict[str, Any]:
    """The rule's parameters with its defaults filled in; exit 2 naming the fix if they cannot work."""
    from ledger.cli.errors import UsageError
    from ledger.core.aggregation import check_rule, with_default_params

    params = with_default_params(args.rule, dict(args.rule_param))
    try:
        check_rule(args.rule, params)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return params


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from aggregator.misbehaviour import MODES
    from ledger.cli.policy_options import add_policy_arguments
    from ledger.core.policy import DEFAULT_MAX_NUM_SAMPLES
    from ledger.cli.wiring import add_ledger_arguments, add_task_arguments

    aggregator = subparsers.add_parser("aggregator", help="run the aggregator (coordinator)")
    sub = aggregator.add_subparsers(dest="aggregator_command", required=True, metavar="ACTION")
    run = sub.add_parser(
        "run", help="commit genesis if needed, then open, verify, aggregate and commit rounds (resumes an open round)"
    )
    add_ledger_arguments(run)
    add_task_arguments(run)
    run.add_argument("--test-data", type=Path, help="held-out evaluation data in the task's format (default: the task's bundled test split)")
    run.add_argument("--rounds", type=int, default=5, help="run until this round has closed (default 5)")
    add_rule_arguments(run)
    run.add_argument("--min-updates", type=int, default=1, help="valid updates that let a round close before its deadline")
    run.add_argument(
        "--round-seconds",
        type=int,
        default=None,
        help="submission window per round, in chain time (default: 60 s plus twice the time the chain "
        "takes in every registered node's submission at the rate measured last round)",
    )
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
    run.add_argument("--threads", type=int, default=1, help="torch threads for evaluation (default 1: the model is small)")
    run.add_argument(
        "--misbehave",
        choices=MODES,
        help="demo only: lie this way each round (aggregator.misbehaviour), for auditors to catch",
    )
    add_policy_arguments(run)
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ledger.cli.errors import CommandError, UsageError
    from ledger.cli.logs import set_role
    from ledger.cli.policy_options import privacy_policy
    from ledger.cli.report import print_round
    from ledger.cli.wiring import Role, blob_store, check_role, ledger_client, load_data_file, resolve_task, signing_account
    from ledger.core.errors import LedgerError
    from ledger.core.progress import report

    if args.rounds < 1 or args.min_updates < 1 or (args.round_seconds is not None and args.round_seconds < 1) or args.threads < 1:
        raise UsageError("--rounds, --min-updates, --round-seconds and --threads must be at least 1")
    rule_params = checked_rule(args)
    task, overrides = resolve_task(args)
    privacy = privacy_policy(args)
    try:  # the held-out data is read before anything touches the chain
        test_data = load_data_file(task, args.test_data) if args.test_data else task.bundled_data().test
    except LedgerError as exc:  # a task with no bundled data
        raise CommandError(str(exc)) from exc
    from aggregator.coordinator import Aggregator, AggregatorConfig
    from ledger.core.policy import PolicyError
    from ledger.core.heap import freeze_heap
    from ledger.core.threads import pin_threads

    if not math.isfinite(args.max_update_mb) or args.max_update_mb <= 0:
        raise UsageError(f"--max-update-mb must be a positive number, got {args.max_update_mb}")
    pin_threads(args.threads)
    config = AggregatorConfig(
        task=task,
        hyperparameters=overrides,
        rule=args.rule,
        rule_params=rule_params,
        min_updates=args.min_updates,
        round_seconds=args.round_seconds,
        max_norm=args.max_norm,
        max_num_samples=args.max_num_samples,
        max_update_bytes=int(args.max_update_mb * 1024 * 1024),
        model_seed=args.model_seed,
        encoding=args.encoding,
        privacy=privacy,
    )
    try:  # checked before anything touches the chain: a bad limit is never pinned at genesis
        config.policy
    except PolicyError as exc:
        raise UsageError(f"the --max-* options do not make a policy: {exc}") from exc
    account = signing_account(args)
    set_role("aggregator")
    client = ledger_client(args, account=account, role=Role.AGGREGATOR)
    if args.register:
        check_role(client, account.address, Role.ADMIN)
    store = blob_store(args, client)
    for address in args.register:
        if not client.is_node(address):
            client.register_node(address)
            report(log, "registered", "registered node {node}", node=address)

    if args.misbehave:
        from aggregator.misbehaviour import LyingAggregator

        aggregator: Aggregator = LyingAggregator(client, store, test_data, config, mode=args.misbehave)
    else:
        aggregator = Aggregator(client, store, test_data, config)
    dp = "no DP" if privacy is None else f"DP σ {privacy.noise_multiplier}, ε budget {privacy.epsilon_budget}"
    report(
        log,
        "ready",
        "{account}: ledger {ledger}, task {task} (spec {spec}), rule {rule} {params}, encoding {encoding}, {dp}, until round {rounds}",
        account=account.address,
        ledger=client.address,
        task=task.name,
        spec=aggregator.spec.spec_hash[:12],
        rule=args.rule,
        params=json.dumps(rule_params, sort_keys=True),
        encoding=args.encoding,
        dp=dp,
        rounds=args.rounds,
    )
    freeze_heap()
    aggregator.run(args.rounds, print_round)
    return 0
