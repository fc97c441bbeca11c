"""`fedledger devnet start|stop|status|reset`: the local anvil chain, from the command line."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ledger.chain.devnet import DEFAULT_PORT, PORT_ENV, Devnet, DevnetError, default_port

EXIT_NOT_RUNNING = 3



def add_commands(subparsers: argparse._SubParsersAction) -> None:
    devnet = subparsers.add_parser("devnet", help="start, stop, inspect or reset the local anvil chain")
    sub = devnet.add_subparsers(dest="devnet_command", required=True, metavar="ACTION")
    actions = {
        "start": (_start, "start anvil in the background (state kept under var/devnet/)"),
        "stop": (_stop, "stop the running anvil (its state is kept)"),
        "status": (_status, "show whether anvil runs; exit code 3 when it does not"),
        "reset": (_reset, "stop anvil, delete its chain state and start a fresh chain"),
    }
    for name, (handler, help_text) in actions.items():
        action = sub.add_parser(name, help=help_text)
        action.add_argument(
            "--port", type=int, default=None, help=f"JSON-RPC port (default ${PORT_ENV} or {DEFAULT_PORT})"
        )
        if name in ("start", "reset"):
            action.add_argument(
                "--block-time",
                type=float,
                default=None,
                metavar="SECONDS",
                help="also mine a block every SECONDS (default: only when a transaction or a deadline needs one)",
            )
        action.add_argument("--json", action="store_true", help="print the devnet's status as JSON")
        action.set_defaults(handler=handler)


def _devnet(args: argparse.Namespace) -> Devnet:
    block_time = getattr(args, "block_time", None)
    if block_time is not None and block_time <= 0:
        from ledger.cli.errors import UsageError

        raise UsageError(f"--block-time must be positive, got {block_time:g}")
    return Devnet(port=args.port if args.port is not None else _cli(default_port), block_time=block_time)


def _show(args: argparse.Namespace, status: Any, text: str) -> None:
    if args.json:
        import json

        print(json.dumps(status.to_json()))
    else:
        print(text)


def _cli(action: Callable[[], Any]) -> Any:
    """Run a devnet action, turning DevnetError into the CLI's one-line error."""
    from ledger.cli.errors import CommandError

    try:
        return action()
    except DevnetError as exc:
        raise CommandError(str(exc)) from exc


def _start(args: argparse.Namespace) -> int:
    devnet = _devnet(args)
    before = _cli(devnet.status)
    if before.running:
        _show(args, before, f"already running — {before.describe()}")
        return 0
    started = _cli(devnet.start)
    _show(args, started, f"{started.describe()}\nstate: {devnet.state_file}  log: {devnet.log_file}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    devnet = _devnet(args)
    had_pid_file = devnet.pid_file.exists()
    pid = _cli(devnet.stop)
    if args.json:
        import json

        print(json.dumps({"stopped": pid, "port": devnet.port}))
    elif pid is not None:
        print(f"stopped devnet pid {pid} on port {devnet.port}")
    elif had_pid_file:
        print(f"devnet on port {devnet.port} was not running; removed stale pid file")
    else:
        print(f"devnet not running on port {devnet.port}")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = _cli(_devnet(args).status)
    _show(args, status, status.describe())
    return 0 if status.running else EXIT_NOT_RUNNING


def _reset(args: argparse.Namespace) -> int:
    devnet = _devnet(args)
    status = _cli(devnet.reset)
    _show(args, status, f"reset: {status.describe()}")
    return 0
