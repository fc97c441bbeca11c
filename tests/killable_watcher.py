"""`fedledger audit watch` that SIGKILLs itself at one step of one version, as a crash there would.

Usage: python killable_watcher.py STEP VERSION <the `fedledger audit watch` arguments...>
Builds the very watcher the command builds (`ledger.cli.audit.build_watcher`), with a step hook.
"""

from __future__ import annotations

import os
import signal
import sys

from ledger.cli.audit import build_watcher
from ledger.cli.main import build_parser


def main() -> None:
    step, version, *arguments = sys.argv[1:]

    def crash(name: str, committed) -> None:  # type: ignore[no-untyped-def]
        if name == step and committed.version == int(version):
            os.kill(os.getpid(), signal.SIGKILL)

    args = build_parser("audit").parse_args(["audit", "watch", *arguments])
    build_watcher(args, on_step=crash).run_once()


if __name__ == "__main__":
    main()
