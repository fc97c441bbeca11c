"""`fedledger devnet start|stop|status|reset`: a local anvil chain whose state survives restarts.

anvil runs detached (its own session, output to a log file) so the CLI can return while the chain
keeps running; a pid file under `var/devnet/` lets later commands find it. `--state` with a 1 s
interval makes anvil rewrite its state file every second, so a kill -9 loses at most the last
second of blocks. What survives a restart (anvil 1.7.1): block numbers, blocks >= 1 with their
hashes and timestamps, transactions, receipts, logs, balances, nonces, code and storage. What does
not: state queries at past blocks (`eth_getBalance(addr, n)` for n < head fails), and block 0,
which anvil re-creates at every start, so its hash/timestamp may change; do not identify the chain
by its genesis hash.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.devkeys import DEV_ACCOUNT_COUNT
from ledger.paths import DEVNET_DIR, var_dir
from ledger.polling import WaitTimeout, poll_until

HOST = "127.0.0.1"  # never expose the dev keys' chain beyond this machine
DEFAULT_PORT = 8545
PORT_ENV = "FEDLEDGER_DEVNET_PORT"
CHAIN_ID = 31337
ANVIL_GLOB = "node_modules/@foundry-rs/anvil-*/bin/anvil"
EXIT_NOT_RUNNING = 3
_POLL_SECONDS = 0.05
_RPC_TIMEOUT_SECONDS = 1.0
_LOG_TAIL_LINES = 20

# Processes this Python process started, so their exit is reaped (a zombie still "exists" to kill(0)).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class DevnetError(RuntimeError):
    """The devnet could not be started, stopped or queried; the message says what to do."""


class AnvilNotFound(DevnetError):
    """The pinned anvil binary is not installed."""


@dataclass(frozen=True)
class DevnetStatus:
    """One look at a devnet: whether it answers, and where its chain is."""

    running: bool
    port: int
    rpc_url: str
    pid: int | None = None
    chain_id: int | None = None
    block_number: int | None = None

    def describe(self) -> str:
        if not self.running:
            extra = f" (pid {self.pid} alive but not answering)" if self.pid else ""
            return f"devnet not running on port {self.port}{extra}"
        return (
            f"devnet running: pid {self.pid}, {self.rpc_url}, chain id {self.chain_id}, "
            f"block {self.block_number}"
        )


def default_port() -> int:
    """The port used when none is given: $FEDLEDGER_DEVNET_PORT, else 8545."""
    raw = os.environ.get(PORT_ENV)
    if raw is None or raw == "":
        return DEFAULT_PORT
    try:
        return int(raw)
    except ValueError:
        raise DevnetError(f"{PORT_ENV}={raw!r} is not a port number") from None


def default_state_dir() -> Path:
    """Where pid, log and state files go: var/devnet (moved by $FEDLEDGER_VAR)."""
    return var_dir() / "devnet"


def anvil_binary() -> Path:
    """The native anvil from hardhat-free-devnet/ (not the node wrapper, whose kill orphans anvil)."""
    candidates = sorted(p for p in DEVNET_DIR.glob(ANVIL_GLOB) if os.access(p, os.X_OK))
    if not candidates:
        raise AnvilNotFound(
            f"anvil is not installed (looked for {DEVNET_DIR / ANVIL_GLOB}): run make setup"
        )
    return candidates[0]


@dataclass
class Devnet:
    """An anvil devnet on 127.0.0.1:`port` whose pid, log and state files live in `state_dir`."""

    port: int = field(default_factory=default_port)
    state_dir: Path = field(default_factory=default_state_dir)

    @property
    def rpc_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"anvil-{self.port}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"anvil-{self.port}.log"

    @property
    def state_file(self) -> Path:
        # One state file per port, so two devnets sharing a var/ never overwrite each other's chain.
        return self.state_dir / f"state-{self.port}.json"

    @property
    def backup_file(self) -> Path:
        return self.state_dir / f"state-{self.port}.json.bak"

    # -- queries ---------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The pid from the pid file if that process is still this port's anvil, else None."""
        try:
            pid = int(self.pid_file.read_text(encoding="ascii").strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _is_anvil_on_port(pid, self.port) else None

    def is_running(self) -> bool:
        """True when our anvil process is alive and answers JSON-RPC."""
        return self.status().running

    def status(self) -> DevnetStatus:
        """Ask the chain for its id and head; a process that does not answer counts as not running."""
        pid = self.pid()
        base = DevnetStatus(running=False, port=self.port, rpc_url=self.rpc_url, pid=pid)
        if pid is None:
            return base
        try:
            chain_id = int(_rpc(self.rpc_url, "eth_chainId"), 16)
            block_number = int(_rpc(self.rpc_url, "eth_blockNumber"), 16)
        except OSError:
            return base
        return DevnetStatus(
            running=True,
            port=self.port,
            rpc_url=self.rpc_url,
            pid=pid,
            chain_id=chain_id,
            block_number=block_number,
        )

    def persisted_block(self) -> int | None:
        """The head block recorded in the state file, or None while it is missing or half-written."""
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
            head = state["best_block_number"]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None
        return int(head, 16) if isinstance(head, str) else int(head)

    def wait_persisted(self, block_number: int, timeout: float = 10.0) -> None:
        """Block until the state file holds `block_number`; only then does a kill -9 keep it."""
        if not _wait_until(lambda: (self.persisted_block() or 0) >= block_number, timeout):
            raise DevnetError(f"state file {self.state_file} did not reach block {block_number}")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> DevnetStatus:
        """Start anvil detached and wait until it answers; a devnet already running is kept."""
        current = self.status()
        if current.running:
            return current
        if current.pid is not None:  # alive but silent: hung or still loading, replace it
            self.stop()
        self.pid_file.unlink(missing_ok=True)  # stale: its process is gone
        self._refuse_foreign_listener()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._check_and_back_up_state()
        process = self._spawn(anvil_binary())
        _write_atomic(self.pid_file, f"{process.pid}\n")
        try:
            self._wait_ready(process, timeout)
        except DevnetError:
            self._terminate(process.pid)
            self.pid_file.unlink(missing_ok=True)
            raise
        return self.status()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (anvil writes its state on exit), SIGKILL after `timeout`; returns the pid stopped."""
        pid = self.pid()
        if pid is not None:
            self._terminate(pid, timeout)
        self.pid_file.unlink(missing_ok=True)
        return pid

    def kill_hard(self, timeout: float = 10.0) -> int | None:
        """SIGKILL without cleanup, as a crash would: the pid file stays behind (for tests)."""
        pid = self.pid()
        if pid is not None:
            _kill(pid, timeout)
        return pid

    def reset(self, timeout: float = 30.0) -> DevnetStatus:
        """Stop, forget the chain (state file and its backup) and start again from genesis."""
        self.stop()
        self.state_file.unlink(missing_ok=True)
        self.backup_file.unlink(missing_ok=True)
        return self.start(timeout)

    # -- helpers ---------------------------------------------------------------------------

    def _refuse_foreign_listener(self) -> None:
        """Something else answering on the port would be mistaken for our chain: refuse."""
        try:
            chain_id = int(_rpc(self.rpc_url, "eth_chainId"), 16)
        except OSError:
            return
        raise DevnetError(
            f"port {self.port} already answers JSON-RPC (chain id {chain_id}) but not from a devnet "
            f"started with this var dir: stop that node or pick another --port"
        )

    def _check_and_back_up_state(self) -> None:
        """anvil rewrites the state file in place, so a kill -9 mid-write can leave it truncated;
        anvil then refuses to start. Keep the last good copy and say how to recover."""
        if not self.state_file.exists():
            return
        if self.persisted_block() is None:
            hint = (
                f"`cp {self.backup_file} {self.state_file}` to resume from the previous start, or "
                if self.backup_file.exists()
                else ""
            )
            raise DevnetError(
                f"state file {self.state_file} is corrupt (torn write during a kill?): "
                f"{hint}`fedledger devnet reset --port {self.port}` to start a new chain"
            )
        shutil.copyfile(self.state_file, self.backup_file)

    def _spawn(self, binary: Path) -> subprocess.Popen[bytes]:
        """Launch anvil in its own session so it outlives this process and ignores our Ctrl-C."""
        if self.log_file.exists():
            self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))
        command = [
            str(binary),
            "--host", HOST,
            "--port", str(self.port),
            "--chain-id", str(CHAIN_ID),
            "--state", str(self.state_file),
            "--state-interval", "1",
            "--accounts", str(DEV_ACCOUNT_COUNT),
            # Errors still reach the log; the banner (dev private keys) and per-call lines do not.
            "--quiet",
        ]  # fmt: skip
        with self.log_file.open("wb") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _CHILDREN[process.pid] = process
        return process

    def _wait_ready(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        """Poll eth_chainId until anvil answers; fail early, with its log, if it exits."""

        def answered() -> bool:
            if process.poll() is not None:
                raise DevnetError(
                    f"anvil exited with code {process.returncode} on port {self.port}:\n{self._log_tail()}"
                )
            try:
                chain_id = int(_rpc(self.rpc_url, "eth_chainId"), 16)
            except OSError:
                return False
            if chain_id != CHAIN_ID:
                raise DevnetError(f"anvil answered chain id {chain_id}, expected {CHAIN_ID}")
            return True

        if not _wait_until(answered, timeout):
            raise DevnetError(f"anvil did not answer on {self.rpc_url} within {timeout:g} s:\n{self._log_tail()}")

    def _terminate(self, pid: int, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if the process outlives `timeout`."""
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not _wait_until(lambda: not _alive(pid), timeout):
            _kill(pid, timeout)

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return f"(no log at {self.log_file})"
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or f"(empty log at {self.log_file})"


def _rpc(url: str, method: str, params: list[Any] | None = None) -> Any:
    """One JSON-RPC call with the standard library: readiness checks must not need web3."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=_RPC_TIMEOUT_SECONDS) as response:
            reply = json.loads(response.read())
    except (urllib.error.URLError, ValueError, TimeoutError, ConnectionError) as exc:
        raise OSError(f"{method} on {url} failed: {exc}") from exc
    if "error" in reply:
        raise OSError(f"{method} on {url} failed: {reply['error']}")
    return reply["result"]


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie counts as dead)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return not Path("/proc").is_dir()  # no /proc (macOS): trust kill(0)
    except IndexError:
        return True


def _is_anvil_on_port(pid: int, port: int) -> bool:
    """A pid file can outlive its process and the pid be reused: check it is anvil on `port`."""
    if not _alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc").is_dir()  # no /proc (macOS): trust the pid file
    except PermissionError:
        return False
    return bool(argv) and Path(os.fsdecode(argv[0])).name == "anvil" and _port_arg(argv) == port


def _port_arg(argv: list[bytes]) -> int | None:
    try:
        return int(argv[argv.index(b"--port") + 1])
    except (ValueError, IndexError):
        return None


def _kill(pid: int, timeout: float) -> None:
    """SIGKILL and wait for the process to be gone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if not _wait_until(lambda: not _alive(pid), timeout):
        raise DevnetError(f"anvil pid {pid} survived SIGKILL for {timeout:g} s")


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` every few ms; whether it became true before the deadline."""
    try:
        return poll_until(condition, timeout=timeout, interval=_POLL_SECONDS, what="the devnet")
    except WaitTimeout:
        return False


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="ascii")
    temporary.replace(path)


# -- CLI ---------------------------------------------------------------------------------------


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
    from ledger.cli import CommandError

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
