"""Child processes the demo and benchmarks run (service, indexer, nodes): started with a log, stopped for sure."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path


def spawn_logged(command: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start `command` with stdout and stderr in `log_path` and no stdin."""
    with log_path.open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def stop_all(children: Sequence[subprocess.Popen[bytes]], *, timeout: float = 10.0) -> None:
    """SIGTERM every child still running, then SIGKILL any that has not exited within `timeout`."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
