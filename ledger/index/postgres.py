"""A throwaway PostgreSQL cluster for tests and benchmarks: Debian's server binaries, a temp folder, a free port.

`make test` installs Debian's `postgresql` package; this starts its own cluster (initdb, then
pg_ctl with fsync off, on 127.0.0.1 only, trust authentication) and removes it on exit. As root
the server runs as the `postgres` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ledger.core.errors import LedgerError
from ledger.core.polling import free_port

POSTGRES_BINARIES = Path("/usr/lib/postgresql")


class PostgresUnavailable(LedgerError):
    """No PostgreSQL server binaries (or no way to run them) on this machine."""


def postgres_binaries() -> Path | None:
    """The newest installed `.../bin` holding initdb and pg_ctl, if any."""
    for candidate in sorted(POSTGRES_BINARIES.glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    return None


@contextmanager
def throwaway_postgres(*, timeout: float = 120.0) -> Iterator[str]:
    """Start a fresh cluster and yield its SQLAlchemy URL (psycopg driver); stop and delete it on exit."""
    binaries = postgres_binaries()
    if binaries is None:
        raise PostgresUnavailable(f"PostgreSQL is not installed (apt-get install -y postgresql): no initdb under {POSTGRES_BINARIES}")
    run_as = _drop_root()
    data = Path(tempfile.mkdtemp(prefix="fedledger-pg-"))
    if run_as:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    cluster = data / "cluster"

    def run(*command: str) -> None:
        done = subprocess.run([*run_as, *command], capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{Path(command[0]).name} failed: {done.stdout}\n{done.stderr}")

    try:
        run(str(binaries / "initdb"), "-D", str(cluster), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(str(binaries / "pg_ctl"), "-D", str(cluster), "-o", options, "-l", str(data / "log"), "-w", "start")
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(binaries / "pg_ctl"), "-D", str(cluster), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _drop_root() -> list[str]:
    """The command prefix that runs the server as `postgres` when we are root; empty otherwise."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root and there is no 'postgres' user to run the server as") from None
    if runuser is None:
        raise PostgresUnavailable("running as root and runuser is missing, so the server cannot drop privileges")
    return [runuser, "-u", "postgres", "--"]
