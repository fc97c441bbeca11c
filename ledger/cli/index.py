"""`fedledger db upgrade|downgrade|current` and `fedledger index run|rebuild`: the SQL index's commands.

The database is FEDLEDGER_DATABASE_URL (default: SQLite under var/), or --database-url. The index
commands refuse a database whose schema is not current, and say to run `fedledger db upgrade`.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from ledger.cli.wiring import add_ledger_arguments

    db = subparsers.add_parser("db", help="migrate the SQL index's schema (Alembic)")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_sub.add_parser("upgrade", help="migrate the index database to the latest schema (creates it)")
    upgrade.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    downgrade = db_sub.add_parser("downgrade", help="undo migrations (default: the last one)")
    downgrade.add_argument("revision", nargs="?", default="-1", help="target revision, e.g. base (default: -1)")
    current = db_sub.add_parser("current", help="print the database's schema revision and the code's")
    for parser in (upgrade, downgrade, current):
        _add_database_argument(parser)
    upgrade.set_defaults(handler=_db_upgrade)
    downgrade.set_defaults(handler=_db_downgrade)
    current.set_defaults(handler=_db_current)

    index = subparsers.add_parser("index", help="mirror the ledger's events into the SQL index")
    index_sub = index.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    run = index_sub.add_parser("run", help="index new blocks: catch up and exit (--once) or keep following")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--once", dest="follow", action="store_false", help="catch up to the head, then exit (default)")
    mode.add_argument("--follow", dest="follow", action="store_true", help="keep polling for new blocks until Ctrl-C")
    run.set_defaults(follow=False, handler=_index_run)
    rebuild = index_sub.add_parser("rebuild", help="delete every indexed row and index again from the start block")
    rebuild.set_defaults(handler=_index_rebuild)
    for parser in (run, rebuild):
        add_ledger_arguments(parser, signing=False)
        _add_database_argument(parser)
        parser.add_argument(
            "--from-block",
            type=int,
            default=None,
            help="first block to index (default: the deployment record's block, else 0)",
        )
        parser.add_argument(
            "--batch-blocks", type=int, help="blocks per eth_getLogs (default 2000; halved when the node refuses)"
        )
        parser.add_argument("--confirmations", type=int, help="stay this many blocks behind the head (default 0)")
        parser.add_argument("--poll-seconds", type=float, help="pause between polls with --follow (default 0.5)")


def _add_database_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", default=None, help="SQLAlchemy URL (default: $FEDLEDGER_DATABASE_URL, else var/index.sqlite)"
    )


def _database_url(args: argparse.Namespace) -> str:
    from ledger.config import Settings

    return Settings().with_overrides(database_url=args.database_url).database_url


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# --------------------------------------------------------------------------- db


@contextmanager
def _engine(args: argparse.Namespace) -> Iterator[Any]:
    """An engine on the index database, disposed afterwards (closes its pool)."""
    from ledger.index import db

    engine = db.make_engine(_database_url(args))
    try:
        yield engine
    finally:
        engine.dispose()


def _db_upgrade(args: argparse.Namespace) -> int:
    from ledger.index import db

    with _engine(args) as engine:
        db.upgrade(engine, args.revision)
        print(f"{_redacted(_database_url(args))}: schema at revision {db.current_revision(engine)}")
    return 0


def _db_downgrade(args: argparse.Namespace) -> int:
    from ledger.index import db

    with _engine(args) as engine:
        db.downgrade(engine, args.revision)
        print(f"{_redacted(_database_url(args))}: schema at revision {db.current_revision(engine) or 'base (empty)'}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    from ledger.index import db

    url = _database_url(args)
    with _engine(args) as engine:
        current = db.current_revision(engine)
    head = db.head_revision()
    state = "up to date" if current == head else "out of date: run `fedledger db upgrade`"
    print(f"{_redacted(url)}: revision {current or 'none'}, code expects {head} ({state})")
    return 0 if current == head else 1


# --------------------------------------------------------------------------- index


def _indexer(args: argparse.Namespace) -> Any:
    from ledger.cli.errors import UsageError
    from ledger.cli.wiring import blob_store, deployment_block, ledger_client
    from ledger.index.db import open_index
    from ledger.index.indexer import Indexer, IndexerConfig

    _engine, sessions = open_index(_database_url(args))  # the cheap, local refusal first
    given = {"batch_blocks": args.batch_blocks, "confirmations": args.confirmations, "poll_seconds": args.poll_seconds}
    try:
        config = IndexerConfig(**{name: value for name, value in given.items() if value is not None})
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    client = ledger_client(args, account=None)  # the chain answers and the address holds our ledger
    start_block = args.from_block if args.from_block is not None else deployment_block(client)
    store = blob_store(args, client)
    return Indexer(client.w3, client.address, sessions, start_block=start_block, store=store, config=config)


def _log_batch(batch: Any) -> None:
    if batch.reorg_to is not None:
        log.warning("reorg handled: index now ends at block %s", batch.reorg_to)
    elif batch.events:
        log.info("blocks %d-%d: %d events", batch.from_block, batch.to_block, batch.events)


def _report(stats: Any, indexer: Any) -> None:
    print(
        f"indexed {stats.events} events in {stats.batches} batches ({stats.reorgs} reorgs) in {stats.seconds:.2f} s; "
        f"ledger {indexer.address} on chain {indexer.chain_id} indexed to block {stats.last_block}"
    )


def _index_run(args: argparse.Namespace) -> int:
    """Chain or store outages are ridden out inside the indexer's connection (see `--patience`);
    past it the command exits 3 and a restart resumes from the cursor."""
    indexer = _indexer(args)
    if not args.follow:
        _report(indexer.run_once(on_batch=_log_batch), indexer)
        return 0
    print(f"following ledger {indexer.address} on chain {indexer.chain_id} (Ctrl-C stops)", flush=True)
    stop = threading.Event()
    try:
        stats = indexer.follow(stop, on_batch=_log_batch)
    except KeyboardInterrupt:
        stop.set()
        print(f"stopped at block {indexer.cursor().last_block}")
        return 0
    _report(stats, indexer)
    return 0


def _index_rebuild(args: argparse.Namespace) -> int:
    indexer = _indexer(args)
    _report(indexer.rebuild(on_batch=_log_batch), indexer)
    return 0
