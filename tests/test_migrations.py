"""The index schema's Alembic migrations: upgrade an empty database, match the models, downgrade cleanly."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ledger.api.app import create_app
from ledger.cli.main import main
from ledger.index import db
from ledger.index.models import Base
from ledger.store.local import LocalBlobStore

INDEX_TABLES = {"nodes", "rounds", "updates", "model_versions", "chain_events", "indexer_cursor"}


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'index.sqlite'}"


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_upgrade_creates_the_schema_the_models_describe(database_url) -> None:
    engine = db.make_engine(database_url)

    db.upgrade(engine)

    assert db.current_revision(engine) == db.head_revision()
    assert INDEX_TABLES <= _tables(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    assert differences == []
    db.check_schema(engine)  # no exception: up to date


def test_constraint_names_follow_the_naming_convention(database_url) -> None:
    engine = db.make_engine(database_url)
    db.upgrade(engine)
    inspector = sa.inspect(engine)

    assert inspector.get_unique_constraints("chain_events")[0]["name"] == "uq_chain_events_tx_hash_log_index"
    assert {fk["name"] for fk in inspector.get_foreign_keys("updates")} == {
        "fk_updates_round_rounds",
        "fk_updates_node_nodes",
    }
    assert inspector.get_check_constraints("rounds")[0]["name"] == "ck_rounds_round_state"


def test_downgrade_to_base_removes_every_table(database_url) -> None:
    engine = db.make_engine(database_url)
    db.upgrade(engine)

    db.downgrade(engine, "base")

    assert db.current_revision(engine) is None
    assert not (_tables(engine) & INDEX_TABLES)
    db.upgrade(engine)  # and back up again
    assert INDEX_TABLES <= _tables(engine)


def test_out_of_date_schema_is_refused_with_what_to_run(database_url, tmp_path) -> None:
    engine = db.make_engine(database_url)

    with pytest.raises(db.SchemaOutOfDate, match="run `fedledger db upgrade`"):
        db.check_schema(engine)
    with pytest.raises(db.SchemaOutOfDate, match="has no fedledger schema"):
        create_app(
            store=LocalBlobStore(tmp_path / "blobs", max_bytes=1024),
            ledger=None,
            max_blob_bytes=1024,
            database_url=database_url,
        )


def test_db_commands_work_from_any_directory(database_url, tmp_path, monkeypatch, capsys) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    assert main(["db", "current", "--database-url", database_url]) == 1
    assert "out of date" in capsys.readouterr().out
    assert main(["db", "upgrade", "--database-url", database_url]) == 0
    assert f"revision {db.head_revision()}" in capsys.readouterr().out
    assert main(["db", "current", "--database-url", database_url]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["db", "downgrade", "base", "--database-url", database_url]) == 0
    assert "base (empty)" in capsys.readouterr().out


def test_database_url_comes_from_the_environment(tmp_path, monkeypatch, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'from-env.sqlite'}"
    monkeypatch.setenv("FEDLEDGER_DATABASE_URL", url)

    assert main(["db", "upgrade"]) == 0

    assert (tmp_path / "from-env.sqlite").is_file()
    assert db.service_database_url(None) == url
    assert db.service_database_url("sqlite:///explicit.sqlite") == "sqlite:///explicit.sqlite"


def test_the_api_serves_without_an_index_only_when_none_exists(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("FEDLEDGER_DATABASE_URL", raising=False)
    monkeypatch.setenv("FEDLEDGER_HOME", str(tmp_path / "var"))

    assert db.service_database_url(None) is None  # no file: blobs only, the audit API answers 503
    engine = db.make_engine(f"sqlite:///{tmp_path / 'var' / 'index.sqlite'}")
    db.upgrade(engine)
    assert db.service_database_url(None) == f"sqlite:///{tmp_path / 'var' / 'index.sqlite'}"


def test_the_round_included_index_comes_and_goes_with_its_revision(database_url) -> None:
    engine = db.make_engine(database_url)

    def indexes() -> set[str]:
        return {index["name"] for index in sa.inspect(engine).get_indexes("updates")}

    db.upgrade(engine)
    assert "ix_updates_round_included" in indexes()
    db.downgrade(engine, "0002")
    assert "ix_updates_round_included" not in indexes() and "ix_updates_update_hash" in indexes()
    db.upgrade(engine)
    assert "ix_updates_round_included" in indexes()
