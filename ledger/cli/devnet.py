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
        action.set_defaults(handler=handler)


def _devnet(args: argparse.Namespace) -> Devnet:
    return Devnet(port=args.port if args.port is not None else _cli(default_port))


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
        print(f"already running — {before.describe()}")
        return 0
    print(_cli(devnet.start).describe())
    print(f"state: {devnet.state_file}  log: {devnet.log_file}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    devnet = _devnet(args)
    had_pid_file = devnet.pid_file.exists()
    pid = _cli(devnet.stop)
    if pid is not None:
        print(f"stopped devnet pid {pid} on port {devnet.port}")
    elif had_pid_file:
        print(f"devnet on port {devnet.port} was not running; removed stale pid file")
    else:
        print(f"devnet not running on port {devnet.port}")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = _cli(_devnet(args).status)
    print(status.describe())
    return 0 if status.running else EXIT_NOT_RUNNING


def _reset(args: argparse.Namespace) -> int:
    devnet = _devnet(args)
    print(f"reset: {_cli(devnet.reset).describe()}")
    return 0
