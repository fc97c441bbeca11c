"""The index database: engines, sessions, Alembic migrations and the schema check everyone runs first.

Any SQLAlchemy URL works (SQLite file by default, PostgreSQL via FEDLEDGER_DATABASE_URL). The
migration scripts live in the project's top-level `migrations/` (located from this file, not the
working directory), so `fedledger db upgrade` works from any directory. The API and the indexer call `check_schema`
and refuse an out-of-date database instead of failing later on a missing column.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ledger.core.errors import LedgerError

MIGRATIONS_PACKAGE = "ledger.index.migrations"


class SchemaOutOfDate(LedgerError):
    """The database's schema revision is not the one this code was written for."""


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    """An engine for `database_url`; for SQLite, creates the folder and turns on foreign keys and WAL."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL lets the API read while the indexer writes; a busy timeout instead of "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits at the end of the block, or rolls back on any exception."""
    with factory() as session, session.begin():
        yield session


# --------------------------------------------------------------------------- Alembic


def migrations_dir() -> Path:
    """The Alembic script folder as installed (a real folder: wheels install unzipped)."""
    from importlib import resources

    return Path(str(resources.files(MIGRATIONS_PACKAGE)))


def alembic_config(engine: Engine | None = None, database_url: str | None = None) -> Any:
    """A programmatic Alembic config (no alembic.ini needed); env.py uses the given engine's connection."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if database_url is not None:
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "migrations/ has no revisions"
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "-1") -> None:
    from alembic import command

    command.downgrade(alembic_config(engine), revision)


def check_schema(engine: Engine) -> None:
    """Raise `SchemaOutOfDate` (saying what to run) unless the database is at the code's revision."""
    expected = head_revision()
    actual = current_revision(engine)
    if actual != expected:
        where = engine.url.render_as_string(hide_password=True)
        state = "has no fedledger schema" if actual is None else f"is at schema revision {actual}"
        raise SchemaOutOfDate(
            f"the index database {where} {state}, this fedledger needs {expected}: "
            "run `fedledger db upgrade` (with the same FEDLEDGER_DATABASE_URL)"
        )


def service_database_url(explicit: str | None) -> str | None:
    """The index the API serves from: `explicit`, else $FEDLEDGER_DATABASE_URL (each must then be
    current), else the default SQLite file only if it exists; None means no audit API (blobs only)."""
    import os

    from ledger.config import Settings

    if explicit:
        return explicit
    if os.environ.get("FEDLEDGER_DATABASE_URL"):
        return os.environ["FEDLEDGER_DATABASE_URL"]
    default = make_url(Settings().database_url)
    if default.get_backend_name() == "sqlite" and default.database and Path(default.database).is_file():
        return default.render_as_string(hide_password=False)
    return None


def open_index(database_url: str) -> tuple[Engine, sessionmaker[Session]]:
    """Engine and session factory for an up-to-date index database (`SchemaOutOfDate` otherwise)."""
    engine = make_engine(database_url)
    try:
        check_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine, session_factory(engine)
