"""A long-running role's start-up objects (torch, web3, the ABI, the task's data, the blob service's
routes) live as long as the process: once started, they are moved out of the garbage collector's
reach, so a full collection scans only what the rounds allocate. Measured in the aggregator with
the blob service in one process: full collections of 0.1–0.19 s during rounds, each one stalling
every request (they hold the GIL), the slowest round of every `bench round` run.
"""

from __future__ import annotations

import gc


def freeze_heap() -> None:
    """Collect what start-up left behind, then exempt everything alive now from later collections."""
    gc.collect()
    gc.freeze()
