"""How many threads torch uses: set once per process, on purpose, never left to torch's default.

The federation's model is small: its training and evaluation are fastest on one thread, and each
extra thread in every co-located process only adds contention (two edge nodes on one 2-core
machine at torch's default took 14.1 s a round instead of 0.63 s). So every role pins its count
at start (`--threads`, default `DEFAULT_THREADS`), and the demo divides the cores among the
processes it runs, never giving out more threads than there are cores.
"""

from __future__ import annotations

import os

import torch

DEFAULT_THREADS = 1


def cores() -> int:
    """The cores this process may run on (its affinity mask where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_process(processes: int) -> int:
    """Threads each of `processes` co-located compute processes may use without oversubscribing."""
    return max(1, cores() // max(1, processes))


def pin_threads(count: int) -> int:
    """Set torch's intra-op threads to `count` and its inter-op pool to one; returns the count in force."""
    if count < 1:
        raise ValueError(f"thread count must be at least 1, got {count}")
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # set already, or parallel work already ran: it can be set only once
        pass
    return torch.get_num_threads()
