"""`fedledger round status [N]` and `fedledger round abandon N`: a round as the chain holds it.

Status reads only the chain: state, deadline in chain time and the seconds left, who submitted,
who was rejected and why, which registered nodes are missing. Abandon closes an open round
without a model (aggregator key) once chain time is past its deadline: the way out of a round
whose aggregator is gone for good.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from ledger.cli.wiring import add_chain_arguments, add_key_arguments, natural_number

    rounds = subparsers.add_parser("round", help="show a round's state, or abandon one after its deadline")
    sub = rounds.add_subparsers(dest="round_command", required=True, metavar="ACTION")
    status = sub.add_parser("status", help="state, deadline (chain time), submitted / rejected / missing nodes")
    status.add_argument("round", type=natural_number, nargs="?", help="round number (default: the latest)")
    add_chain_arguments(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)
    abandon = sub.add_parser("abandon", help="close an open round without a model, after its deadline (aggregator key)")
    abandon.add_argument("round", type=natural_number, help="round number")
    add_chain_arguments(abandon)
    add_key_arguments(abandon)
    abandon.add_argument("--json", action="store_true", help="print JSON")
    abandon.set_defaults(handler=_abandon)


def round_status(client: Any, round_number: int) -> dict[str, Any]:
    """Everything the chain says about one round, as a JSON-ready mapping."""
    from ledger.chain import events
    from ledger.chain.client import RoundState
    from ledger.chain.clock import ChainClock
    from ledger.chain.rounds import active_nodes, committed_models, round_rejections, round_submissions, round_topic
    from ledger.core.reasons import AbandonReason, RejectReason

    info = client.get_round(round_number)
    if info.state is RoundState.NONE:
        from ledger.cli.errors import CommandError

        raise CommandError(f"round {round_number} was never opened on ledger {client.address}")
    clock = ChainClock(client.w3)
    submissions = round_submissions(client, round_number)
    rejections = {e.node: e.reason_code for e in round_rejections(client, round_number)}
    registered = active_nodes(client)
    submitted = {s.node for s in submissions}
    status: dict[str, Any] = {
        "round": round_number,
        "state": info.state.name.lower(),
        "base_model_hash": info.base_model_hash,
        "deadline": info.deadline,
        "chain_time": clock.now(),
        "seconds_left": clock.seconds_left(info.deadline) if info.state is RoundState.OPEN else 0,
        "min_updates": info.min_updates,
        "registered": len(registered),
        "submitted": [
            {
                "node": s.node,
                "update_hash": s.update_hash,
                "num_samples": s.num_samples,
                "block": s.ref.block_number,
                "rejected": _reason(RejectReason, rejections.get(s.node)),
            }
            for s in submissions
        ],
        "rejected": len(rejections),
        "missing": [node for node in registered if node not in submitted],
        "model_hash": None,
        "abandon_reason": None,
    }
    if info.state is RoundState.FINALIZED:
        status["model_hash"] = next(e.model_hash for e in committed_models(client) if e.round == round_number and e.version > 0)
    elif info.state is RoundState.ABANDONED:
        abandoned = client.events(event_type=events.RoundAbandoned, topic_filters=[round_topic(round_number)])
        status["abandon_reason"] = _reason(AbandonReason, abandoned[-1].reason_code if abandoned else None)
    return status


def _reason(kind: Any, code: int | None) -> dict[str, Any] | None:
    if code is None:
        return None
    try:
        reason = kind(code)
    except ValueError:
        return {"code": code, "name": None}
    return {"code": code, "name": reason.name.lower(), "description": reason.description}


def _latest_round(client: Any) -> int:
    from ledger.cli.errors import CommandError

    last = client.counters().last_round
    if last == 0:
        raise CommandError(f"no round has been opened on ledger {client.address} yet")
    return int(last)


def _status(args: argparse.Namespace) -> int:
    from ledger.cli.wiring import ledger_client

    client = ledger_client(args, account=None)
    status = round_status(client, args.round if args.round is not None else _latest_round(client))
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(_format_status(status))
    return 0


def _format_status(status: dict[str, Any]) -> str:
    state = status["state"]
    line = f"round {status['round']}: {state}"
    if state == "open":
        line += f", {status['seconds_left']} s left (deadline {status['deadline']}, chain time {status['chain_time']})"
    elif state == "finalized":
        line += f", model {status['model_hash']}"
    elif status["abandon_reason"]:
        line += f" ({status['abandon_reason']['name']})"
    lines = [
        line,
        f"  base {status['base_model_hash']}",
        f"  {len(status['submitted'])} submitted, {status['rejected']} rejected, {status['registered']} registered nodes,"
        f" {status['min_updates']} needed before the deadline",
    ]
    for entry in status["submitted"]:
        verdict = f"rejected ({entry['rejected']['name']})" if entry["rejected"] else "submitted"
        lines.append(f"  {entry['node']}  {entry['update_hash'][:12]}…  {entry['num_samples']:>6} samples  {verdict}")
    for node in status["missing"]:
        lines.append(f"  {node}  missing")
    return "\n".join(lines)


def _abandon(args: argparse.Namespace) -> int:
    from ledger.chain import errors
    from ledger.chain.client import RoundState
    from ledger.chain.clock import ChainClock
    from ledger.cli.errors import CommandError
    from ledger.cli.wiring import Role, ledger_client, signing_account
    from ledger.core.reasons import AbandonReason

    client = ledger_client(args, account=signing_account(args), role=Role.AGGREGATOR)
    info = client.get_round(args.round)
    if info.state is not RoundState.OPEN:
        raise CommandError(f"round {args.round} is {info.state.name.lower()}, not open: nothing to abandon")
    clock = ChainClock(client.w3)
    if not clock.too_late(info.deadline):
        raise CommandError(
            f"round {args.round} is still open for {clock.seconds_left(info.deadline)} s of chain time "
            f"(deadline {info.deadline}): abandon it after that"
        )
    clock.wait_past(info.deadline, timeout=60.0)  # a block past the deadline, so the abandon cannot revert
    try:
        result = client.abandon_round(args.round, AbandonReason.BY_OPERATOR)
    except errors.RoundNotOpen:
        raise CommandError(f"round {args.round} closed while we were asking (state: {client.get_round(args.round).state.name.lower()})") from None
    if args.json:
        print(json.dumps({"round": args.round, "state": "abandoned", "reason": "by_operator", "block": result.block_number}))
    else:
        print(f"round {args.round} abandoned in block {result.block_number} (reason: by_operator)")
    return 0
