"""`fedledger data split`: per-node data files (and the held-out test file) from a task's bundled data set.

So file-based nodes can be tried at once: `fedledger node run --task T --data DIR/node-0.npz`.
The files are in the task's own format (what its `load_data` reads) and never overwrite a file.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from ledger.cli.wiring import add_share_arguments, add_task_arguments

    data = subparsers.add_parser("data", help="write per-node data files from a task's bundled data set")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    split = sub.add_parser("split", help="split the task's bundled data into node-K files and a test file")
    add_task_arguments(split, hyperparameters=False)
    split.add_argument("--nodes", type=int, required=True, help="how many node files")
    add_share_arguments(split)
    split.add_argument("--seed", type=int, default=0, help="seed of the split")
    split.add_argument("--out", type=Path, required=True, help="folder for node-0..node-{N-1} and test files")
    split.set_defaults(handler=_split)


def _split(args: argparse.Namespace) -> int:
    from ledger.cli.errors import CommandError, UsageError
    from ledger.cli.wiring import resolve_task
    from ledger.core.errors import LedgerError
    from ledger.tasks.partition import split_examples

    if args.nodes < 1:
        raise UsageError("--nodes must be at least 1")
    task, _ = resolve_task(args)
    try:
        bundled = task.bundled_data()
        shares = split_examples(bundled.train, args.nodes, iid=args.iid, alpha=args.alpha, seed=args.seed)
    except (LedgerError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    files = [(args.out / f"node-{index}{task.data_suffix}", share) for index, share in enumerate(shares)]
    files.append((args.out / f"test{task.data_suffix}", bundled.test))
    existing = [str(path) for path, _ in files if path.exists()]
    if existing:
        raise CommandError(f"{existing[0]} exists: choose an empty --out (nothing was written)")
    for path, examples in files:
        task.save_data(examples, path)
        print(f"{path}  {len(examples)} samples", flush=True)
    return 0
