"""The devnet's persister: writes anvil's state to its state file when the chain changed, at a pace
that keeps the cost bounded, so a kill -9 of anvil loses little and a quiet chain costs nothing.

anvil's own `--state-interval N` rewrites the whole state every N seconds whether or not anything
happened: O(chain) of work per interval, a full core at ~30k blocks with N = 1. Here a small process
beside anvil asks `eth_blockNumber` once a second (constant cost) and dumps (`anvil_dumpState`)
only when the head moved, and never more often than keeps the dumps under `CPU_SHARE` of one core:
the next dump waits at least `dump time / CPU_SHARE` (and at least `MIN_INTERVAL_SECONDS`). A kill -9
of anvil loses at most the blocks since the last dump: under a second on a young chain, a few
seconds on a long one (`fedledger bench idle` measures both). The file is replaced atomically
(written beside it, fsynced, renamed), so it is never torn; anvil also dumps on a clean stop.

Run by `ledger.chain.devnet.Devnet.start` as `python -m ledger.chain.persist`; it exits when
anvil's process is gone. Standard library only, so it starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from pathlib import Path

from ledger.chain.devnet import process_alive, rpc_call

CPU_SHARE = 0.05
MIN_INTERVAL_SECONDS = 1.0
HEAD_POLL_SECONDS = 1.0
DUMP_TIMEOUT_SECONDS = 300.0


def dump(rpc_url: str, state_file: Path) -> float:
    """Write anvil's current state to `state_file` atomically; returns the seconds it took."""
    started = time.monotonic()
    packed = rpc_call(rpc_url, "anvil_dumpState", [], timeout=DUMP_TIMEOUT_SECONDS)
    document = gzip.decompress(bytes.fromhex(packed.removeprefix("0x")))  # the JSON anvil's --state reads
    temporary = state_file.with_name(state_file.name + ".tmp")
    with temporary.open("wb") as handle:
        handle.write(document)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(state_file)
    return time.monotonic() - started


def run(rpc_url: str, state_file: Path, anvil_pid: int) -> int:
    """Persist until anvil's process is gone; returns an exit code."""
    persisted_head: int | None = None
    next_dump = 0.0
    while process_alive(anvil_pid):
        try:
            head = int(rpc_call(rpc_url, "eth_blockNumber"), 16)
            if head != persisted_head and time.monotonic() >= next_dump:
                took = dump(rpc_url, state_file)
                persisted_head = head
                next_dump = time.monotonic() + max(MIN_INTERVAL_SECONDS, took / CPU_SHARE)
        except OSError as exc:  # anvil busy, restarting or gone: the loop's liveness check decides
            print(f"persist: {exc}", file=sys.stderr, flush=True)
        time.sleep(HEAD_POLL_SECONDS)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ledger.chain.persist", description=__doc__.splitlines()[0])
    parser.add_argument("--rpc-url", required=True)
    parser.add_argument("--state-file", type=Path, required=True)
    parser.add_argument("--anvil-pid", type=int, required=True)
    args = parser.parse_args(argv)
    return run(args.rpc_url, args.state_file, args.anvil_pid)


if __name__ == "__main__":
    sys.exit(main())
