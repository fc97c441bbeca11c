"""The devnet manager: a local anvil chain whose state survives restarts, and throwaway chains.

anvil runs detached (its own session, output to a log file) so the CLI can return while the chain
keeps running; a pid file under `var/devnet/` lets later commands find it. anvil loads its state
file at start and writes it on a clean stop (`--state`); while it runs, a small persister process
beside it (`ledger.chain.persist`) rewrites the file only when the chain moved, paced so the dumps
cost at most a few percent of a core whatever the chain's length, so a quiet devnet costs nothing
and a kill -9 loses at most the blocks since the last dump (about a second on a young chain).
What survives a restart (anvil 1.7.1): block numbers, blocks >= 1 with their
hashes and timestamps, transactions, receipts, logs, balances, nonces, code and storage. What does
not: state queries at past blocks (`eth_getBalance(addr, n)` for n < head fails), and block 0,
which anvil re-creates at every start, so its hash/timestamp may change; do not identify the chain
by its genesis hash.
"""

from __future__ import annotations

import json
import tempfile
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.chain.devkeys import DEV_ACCOUNT_COUNT
from ledger.config import devnet_toolchain_dirs, home_dir
from ledger.core.polling import WaitTimeout, free_port, poll_until

HOST = "127.0.0.1"  # never expose the dev keys' chain beyond this machine
DEFAULT_PORT = 8545
PORT_ENV = "FEDLEDGER_DEVNET_PORT"
CHAIN_ID = 31337
ANVIL_ENV = "FEDLEDGER_ANVIL"
ANVIL_GLOB = "node_modules/@foundry-rs/anvil-*/bin/anvil"
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

    def to_json(self) -> dict[str, object]:
        return {
            "running": self.running,
            "port": self.port,
            "rpc_url": self.rpc_url,
            "pid": self.pid,
            "chain_id": self.chain_id,
            "block_number": self.block_number,
        }

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


MAX_PERSISTED_STATES = 64


def default_state_dir() -> Path:
    """Where pid, log and state files go: var/devnet (moved by $FEDLEDGER_HOME)."""
    return home_dir() / "devnet"


def anvil_binary() -> Path:
    """$FEDLEDGER_ANVIL, else `anvil` on PATH, else the native anvil `make setup` put in hardhat-free-devnet/.

    The native binary, not npm's node wrapper: killing the wrapper orphans anvil.
    """
    configured = os.environ.get(ANVIL_ENV)
    if configured:
        if not os.access(configured, os.X_OK):
            raise AnvilNotFound(f"{ANVIL_ENV}={configured} is not an executable anvil")
        return Path(configured)
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    for folder in devnet_toolchain_dirs():
        candidates = sorted(p for p in folder.glob(ANVIL_GLOB) if os.access(p, os.X_OK))
        if candidates:
            return candidates[0]
    raise AnvilNotFound(
        f"anvil not found: set {ANVIL_ENV}, put anvil (Foundry) on PATH, "
        "or run `make setup` in a fedledger checkout (installs it under hardhat-free-devnet/)"
    )


@dataclass
class Devnet:
    """An anvil devnet on 127.0.0.1:`port` whose pid, log and state files live in `state_dir`."""

    port: int = field(default_factory=default_port)
    state_dir: Path = field(default_factory=default_state_dir)
    # False: no state file (a throwaway chain for benchmarks and tests); lost when anvil stops.
    persist: bool = True
    extra_args: Sequence[str] = ()  # e.g. ("--gas-limit", "100000000")
    # None: automine (a block per transaction, nothing at rest; deadlines are carried by
    # `ledger.chain.clock`, which mines one empty block when a deadline needs it). N: also mine a
    # block every N seconds, like a public chain, at the price of blocks (and state) growing at rest.
    block_time: float | None = None

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
    def history_cache(self) -> Path:
        # anvil moves old blocks' states out of memory to disk; by default into ~/.foundry/anvil/tmp,
        # where a killed anvil leaves them forever (61 GB after a day of tests here). Kept beside
        # the devnet instead, and cleared whenever this port's anvil starts.
        return self.state_dir / f"anvil-{self.port}-history"

    @property
    def persister_pid_file(self) -> Path:
        return self.state_dir / f"persist-{self.port}.pid"

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
            chain_id = int(rpc_call(self.rpc_url, "eth_chainId"), 16)
            block_number = int(rpc_call(self.rpc_url, "eth_blockNumber"), 16)
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
        if self.persist:
            self._check_and_back_up_state()
        process = self._spawn(anvil_binary())
        _write_atomic(self.pid_file, f"{process.pid}\n")
        try:
            self._wait_ready(process, timeout)
        except DevnetError:
            self._terminate(process.pid)
            self.pid_file.unlink(missing_ok=True)
            raise
        if self.persist:
            self._spawn_persister(process.pid)
        return self.status()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (anvil writes its state on exit), SIGKILL after `timeout`; returns the pid stopped.

        The persister goes first, so it cannot replace the file while anvil writes its last state.
        """
        self._stop_persister(timeout)
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
            chain_id = int(rpc_call(self.rpc_url, "eth_chainId"), 16)
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

    def _spawn_persister(self, anvil_pid: int) -> None:
        """Start `ledger.chain.persist` beside anvil, detached like it; it exits when anvil does."""
        self._stop_persister(10.0)  # one persister per devnet (a crashed anvil's may still be leaving)
        command = [sys.executable, "-m", "ledger.chain.persist", "--rpc-url", self.rpc_url]
        command += ["--state-file", str(self.state_file), "--anvil-pid", str(anvil_pid)]
        with self.log_file.with_name(f"persist-{self.port}.log").open("ab") as log:
            persister = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        _CHILDREN[persister.pid] = persister
        _write_atomic(self.persister_pid_file, f"{persister.pid}\n")

    def _stop_persister(self, timeout: float) -> None:
        try:
            pid = int(self.persister_pid_file.read_text(encoding="ascii").strip())
        except (FileNotFoundError, ValueError):
            return
        if _is_persister(pid, self.port):
            self._terminate(pid, timeout)
        self.persister_pid_file.unlink(missing_ok=True)

    def _spawn(self, binary: Path) -> subprocess.Popen[bytes]:
        """Launch anvil in its own session so it outlives this process and ignores our Ctrl-C."""
        if self.log_file.exists():
            self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))
        shutil.rmtree(self.history_cache, ignore_errors=True)  # a dead anvil's; the state file is what persists
        command = [
            str(binary),
            "--host", HOST,
            "--port", str(self.port),
            "--chain-id", str(CHAIN_ID),
            *(("--state", str(self.state_file)) if self.persist else ()),
            *(("--block-time", f"{self.block_time:g}") if self.block_time else ()),
            "--accounts", str(DEV_ACCOUNT_COUNT),
            "--cache-path", str(self.history_cache),
            # Nothing here reads state at old blocks (logs and receipts need none), so keep at most
            # this many old states on disk: 10,000 blocks leave ~20 MB instead of several GB.
            "--max-persisted-states", str(MAX_PERSISTED_STATES),
            # Errors still reach the log; the banner (dev private keys) and per-call lines do not.
            "--quiet",
            *self.extra_args,
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
                chain_id = int(rpc_call(self.rpc_url, "eth_chainId"), 16)
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
        if not _wait_until(lambda: not process_alive(pid), timeout):
            _kill(pid, timeout)

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return f"(no log at {self.log_file})"
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or f"(empty log at {self.log_file})"


@contextmanager
def throwaway_devnet(*, gas_limit: int | None = None, timeout: float = 30.0) -> Iterator[Devnet]:
    """A stateless anvil on a free port for benchmarks and tests, stopped (and forgotten) on exit."""
    extra = ("--gas-limit", str(gas_limit)) if gas_limit else ()
    with tempfile.TemporaryDirectory(prefix="fedledger-anvil-") as state_dir:
        devnet = Devnet(port=free_port(), state_dir=Path(state_dir), persist=False, extra_args=extra)
        devnet.start(timeout)
        try:
            yield devnet
        finally:
            devnet.stop()


def rpc_batch(url: str, calls: Sequence[tuple[str, Sequence[Any]]], *, timeout: float = _RPC_TIMEOUT_SECONDS) -> list[Any]:
    """JSON-RPC calls in one HTTP request, with the standard library (no web3: fast to import).

    Any transport failure or error reply raises OSError naming the method.
    """
    if not calls:
        return []
    body = [{"jsonrpc": "2.0", "id": index, "method": method, "params": list(params)} for index, (method, params) in enumerate(calls)]
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            replies = json.loads(response.read())
    except (urllib.error.URLError, ValueError, TimeoutError, ConnectionError) as exc:
        raise OSError(f"{calls[0][0]} on {url} failed: {exc}") from exc
    if not isinstance(replies, list):
        raise OSError(f"{calls[0][0]} on {url} failed: {replies.get('error') if isinstance(replies, dict) else replies}")
    by_id = {reply.get("id"): reply for reply in replies}
    results = []
    for index, (method, _params) in enumerate(calls):
        reply = by_id.get(index, {})
        if "error" in reply or "result" not in reply:
            raise OSError(f"{method} on {url} failed: {reply.get('error', 'no reply')}")
        results.append(reply["result"])
    return results


def rpc_call(url: str, method: str, params: Sequence[Any] = (), *, timeout: float = _RPC_TIMEOUT_SECONDS) -> Any:
    """One JSON-RPC call (see `rpc_batch`)."""
    return rpc_batch(url, [(method, params)], timeout=timeout)[0]


def process_alive(pid: int) -> bool:
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
    if not process_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc").is_dir()  # no /proc (macOS): trust the pid file
    except PermissionError:
        return False
    return bool(argv) and Path(os.fsdecode(argv[0])).name == "anvil" and _port_arg(argv) == port


def _is_persister(pid: int, port: int) -> bool:
    """Whether `pid` is still the persister of the devnet on `port` (pids get reused)."""
    if not process_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc").is_dir()
    except PermissionError:
        return False
    return b"ledger.chain.persist" in argv and f"127.0.0.1:{port}".encode() in b" ".join(argv)


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
    if not _wait_until(lambda: not process_alive(pid), timeout):
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
