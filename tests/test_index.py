"""The indexer: the SQL index equals the chain after real rounds, a restart, a rebuild and a real reorg.

"Equals the chain" is checked against the contract's own views (getRound, submissionOf,
rejectionOf, modelOf, isNode) and its event log, never against what the indexer wrote elsewhere.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from federation import History, shared_history
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from web3._utils.events import get_event_data

from ledger.chain import events as ev
from ledger.chain.client import LedgerClient, RoundState
from ledger.index import db
from ledger.index.indexer import Batch, Indexer, IndexerConfig, IndexMismatch, apply_events
from ledger.index.models import ChainEvent, IndexerCursor, ModelVersion, Node, Round, Submission
from ledger.chain.devnet import rpc_call
from ledger.cli.bench.synthetic import anvil_bulk_history, label_hash, scripted_history
from ledger.core.merkle import merkle_root
from ledger.core.polling import poll_until
from ledger.store.local import LocalBlobStore
from ledger.chain.inprocess import InProcessLedger, start_in_process_ledger

TABLES = (Node, Round, Submission, ModelVersion, ChainEvent, IndexerCursor)
SURROGATE_COLUMNS = {"id"}


# --------------------------------------------------------------------------- helpers


def new_index(path: Path) -> sessionmaker[Session]:
    engine = db.make_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    return db.session_factory(engine)


def dump(sessions: sessionmaker[Session]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every index table, sorted, without surrogate ids: equal dumps, equal indexes."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with sessions() as session:
        for model in TABLES:
            table = model.__table__
            columns = [c for c in table.columns if c.name not in SURROGATE_COLUMNS]
            rows = session.execute(select(*columns)).all()
            tables[table.name] = sorted((tuple(repr(v) for v in row) for row in rows))
    return tables


def assert_index_matches_chain(sessions: sessionmaker[Session], client: LedgerClient, start_block: int = 0) -> None:
    chain_events = client.events(start_block)
    with sessions() as session:
        stored = session.execute(
            select(ChainEvent.tx_hash, ChainEvent.log_index, ChainEvent.block_hash, ChainEvent.event_name)
        ).all()
        assert sorted(stored) == sorted(
            (e.ref.tx_hash, e.ref.log_index, e.ref.block_hash, e.event_name) for e in chain_events
        )

        rounds = session.scalars(select(Round)).all()
        assert len(rounds) == client.counters().last_round
        for row in rounds:
            info = client.get_round(row.round)
            assert (row.base_model_hash, row.deadline, row.min_updates) == (
                info.base_model_hash,
                info.deadline,
                info.min_updates,
            )
            assert row.state.value == info.state.name.lower()

        for update in session.scalars(select(Submission)):
            assert client.submission_of(update.round, update.node) == update.update_hash
            assert client.rejection_of(update.round, update.node) == (update.rejected_reason or 0)
            if update.rejected_reason is not None:
                assert update.included is False

        versions = session.scalars(select(ModelVersion).order_by(ModelVersion.version)).all()
        assert len(versions) == client.counters().version_count
        for version in versions:
            info = client.model_of(version.model_hash)
            assert info is not None
            assert (info.version, info.round, info.included_count) == (
                version.version,
                version.round,
                version.included_count,
            )
            if version.round > 0:
                included = session.scalars(
                    select(Submission.update_hash).where(Submission.round == version.round, Submission.included.is_(True))
                ).all()
                assert merkle_root(bytes.fromhex(h) for h in included).hex() == version.included_root
                assert client.get_round(version.round).state is RoundState.FINALIZED

        for node in session.scalars(select(Node)):
            assert client.is_node(node.address) == node.active


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> History:
    return shared_history(tmp_path_factory)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory) -> tuple[InProcessLedger, LocalBlobStore, Any]:
    """A varied history (rejection, abandoned round, revoked node, missing metadata) on its own chain."""
    chain = start_in_process_ledger(3)
    store = LocalBlobStore(tmp_path_factory.mktemp("scripted-blobs"), max_bytes=1 << 20)
    script = scripted_history(chain, store, rounds=4, advance_time=chain.advance_time)
    return chain, store, script


# --------------------------------------------------------------------------- decoding


def test_fast_decoder_agrees_with_web3_on_every_event(scripted) -> None:
    chain, _store, _script = scripted
    logs = chain.w3.eth.get_logs({"address": chain.address, "fromBlock": 0, "toBlock": "latest"})
    names = set()
    for log in logs:
        abi = ev.event_abis()[bytes(log["topics"][0])]
        reference = get_event_data(chain.w3.codec, abi, log)["args"]
        decoded = ev.decode_log(chain.w3, log)
        assert decoded is not None
        names.add(decoded.event_name)
        for arg in abi["inputs"]:
            value = reference[arg["name"]]
            field = ev._FIELD_NAMES.get(arg["name"], arg["name"])
            if arg["type"] == "bytes32":
                value = None if field in ev._OPTIONAL_HASHES and bytes(value) == bytes(32) else bytes(value).hex()
            assert getattr(decoded, field) == value
    assert names == set(ev.EVENT_TYPES)


# --------------------------------------------------------------------------- real rounds


def test_index_equals_the_chain_after_real_rounds(history, tmp_path) -> None:
    federation = history.federation
    sessions = new_index(tmp_path / "index.sqlite")
    indexer = Indexer(federation.chain.w3, federation.chain.address, sessions, store=federation.store)

    stats = indexer.run_once()

    assert stats.events == len(federation.chain.admin.events())
    assert_index_matches_chain(sessions, federation.chain.admin)
    with sessions() as session:
        versions = session.scalars(select(ModelVersion).order_by(ModelVersion.version)).all()
        assert [v.model_hash for v in versions[: len(history.honest)]] == history.honest
        for version in versions[1:]:
            assert version.metadata_loaded and version.rule_name is not None
            assert 0 < version.metrics["test_accuracy"] <= 1
            assert version.depth == version.version  # a linear lineage
        rejected = session.scalars(select(Submission).where(Submission.rejected_reason.is_not(None))).all()
        assert [(u.round, u.rejected_reason, u.included) for u in rejected] == [(2, 8, False)]
        # The "update" lie names an update that is not in the round: the chain's set decides inclusion.
        lying = session.scalars(select(ModelVersion).where(ModelVersion.model_hash == history.lies["update"])).one()
        assert session.scalar(
            select(Submission.included).where(Submission.round == lying.round).limit(1)
        ) is True

    # Rebuilding from block 0 gives the same rows.
    before = dump(sessions)
    rebuilt = indexer.rebuild()
    assert rebuilt.events == stats.events
    assert dump(sessions) == before


# --------------------------------------------------------------------------- restarts


def test_resume_after_a_stop_between_batches_gives_the_same_index(scripted, tmp_path) -> None:
    chain, store, _script = scripted
    reference = new_index(tmp_path / "reference.sqlite")
    Indexer(chain.w3, chain.address, reference, store=store).run_once()

    sessions = new_index(tmp_path / "resumed.sqlite")
    config = IndexerConfig(batch_blocks=4)

    class Killed(Exception):
        pass

    seen: list[Batch] = []

    def kill_after_three(batch: Batch) -> None:
        seen.append(batch)
        if len(seen) == 3:
            raise Killed

    with pytest.raises(Killed):
        Indexer(chain.w3, chain.address, sessions, store=store, config=config).run_once(on_batch=kill_after_three)
    with sessions() as session:
        assert session.get(IndexerCursor, 1).last_block == 11  # three batches of four blocks, committed

    stats = Indexer(chain.w3, chain.address, sessions, store=store, config=config).run_once()

    assert stats.history[0].from_block == 12
    assert dump(sessions) == dump(reference)
    assert_index_matches_chain(sessions, chain.admin)


def test_a_crash_inside_a_batch_leaves_no_trace(scripted, tmp_path, monkeypatch) -> None:
    chain, store, _script = scripted
    sessions = new_index(tmp_path / "index.sqlite")
    indexer = Indexer(chain.w3, chain.address, sessions, store=store, config=IndexerConfig(batch_blocks=10))
    assert indexer.step() is not None
    after_first = dump(sessions)

    from ledger.index import indexer as indexer_module

    def write_then_crash(session: Session, found: Any, store: Any = None) -> int:
        apply_events(session, found, store)
        session.flush()
        raise RuntimeError("power cut")

    monkeypatch.setattr(indexer_module, "apply_events", write_then_crash)
    with pytest.raises(RuntimeError, match="power cut"):
        indexer.step()
    assert dump(sessions) == after_first

    monkeypatch.undo()
    indexer.run_once()
    assert_index_matches_chain(sessions, chain.admin)


def test_the_same_events_twice_change_nothing(scripted, tmp_path) -> None:
    chain, store, _script = scripted
    sessions = new_index(tmp_path / "index.sqlite")
    Indexer(chain.w3, chain.address, sessions, store=store).run_once()
    before = dump(sessions)

    with db.transaction(sessions) as session:
        assert apply_events(session, chain.admin.events(), store) == 0

    assert dump(sessions) == before


def test_metadata_missing_at_first_is_filled_in_later(scripted, tmp_path) -> None:
    chain, store, script = scripted
    complete = new_index(tmp_path / "complete.sqlite")
    Indexer(chain.w3, chain.address, complete, store=store).run_once()
    sessions = new_index(tmp_path / "late.sqlite")

    Indexer(chain.w3, chain.address, sessions, store=None).run_once()
    with sessions() as session:
        assert session.scalars(select(ModelVersion.metadata_loaded)).all() == [False] * 5
        # Inclusion never needs the blobs: the chain's submissions and Merkle root decide it.
        assert session.scalar(select(Submission.included).where(Submission.round == 3).limit(1)) is True

    Indexer(chain.w3, chain.address, sessions, store=store).run_once()

    assert dump(sessions) == dump(complete)
    with sessions() as session:
        loaded = dict(session.execute(select(ModelVersion.model_hash, ModelVersion.metadata_loaded)).all())
    assert [h for h, ok in loaded.items() if not ok] == script.missing_metadata


def test_an_index_refuses_another_ledger(scripted, tmp_path) -> None:
    chain, store, _script = scripted
    sessions = new_index(tmp_path / "index.sqlite")
    Indexer(chain.w3, chain.address, sessions).run_once()
    other_chain = start_in_process_ledger(0)
    other, _ = LedgerClient.deploy(other_chain.w3, other_chain.new_account("another deployer"))

    with pytest.raises(IndexMismatch, match="fedledger index rebuild"):
        Indexer(other.w3, other.address, sessions).run_once()


def test_confirmations_keep_the_index_behind_the_head(scripted, tmp_path) -> None:
    chain, _store, _script = scripted
    sessions = new_index(tmp_path / "index.sqlite")

    stats = Indexer(chain.w3, chain.address, sessions, config=IndexerConfig(confirmations=3)).run_once()

    assert stats.last_block == chain.w3.eth.block_number - 3


def test_follow_picks_up_new_events(tmp_path) -> None:
    chain = start_in_process_ledger(1)
    sessions = new_index(tmp_path / "index.sqlite")
    indexer = Indexer(chain.w3, chain.address, sessions, config=IndexerConfig(poll_seconds=0.02))
    stop = threading.Event()
    follower = threading.Thread(target=indexer.follow, args=(stop,), daemon=True)
    follower.start()
    try:
        chain.admin.commit_genesis(label_hash("follow/genesis"), label_hash("follow/meta"))
        _poll(lambda: _count(sessions, ModelVersion) == 1, what="the genesis commit to be indexed")
    finally:
        stop.set()
        follower.join(10)
    assert not follower.is_alive()


def _count(sessions: sessionmaker[Session], model: Any) -> int:
    with sessions() as session:
        return len(session.scalars(select(model)).all())


def _poll(condition: Callable[[], bool], *, what: str, timeout: float = 20.0) -> None:
    poll_until(condition, timeout=timeout, interval=0.02, what=what)


# --------------------------------------------------------------------------- anvil: reorg, kill -9, CLI


@pytest.mark.devnet
def test_a_real_reorg_is_rolled_back_and_reindexed(anvil_devnet, tmp_path) -> None:
    from ledger.chain.connect import connect

    bulk = anvil_bulk_history(anvil_devnet.rpc_url, nodes=4, rounds=3, reject_every=3)
    w3 = connect(anvil_devnet.rpc_url)
    client = LedgerClient(w3, bulk.address)
    sessions = new_index(tmp_path / "index.sqlite")
    indexer = Indexer(w3, bulk.address, sessions, start_block=bulk.deploy_block)
    indexer.run_once()
    assert_index_matches_chain(sessions, client, bulk.deploy_block)
    orphaned_head = bytes(w3.eth.get_block("latest")["hash"]).hex()

    # Replace the last 2 blocks (round 3's submissions, then its rejections + finalize) with a
    # branch where only one node submits in round 3, into a block at the same height.
    node = bulk.node_addresses[0]
    rpc_call(anvil_devnet.rpc_url, "anvil_impersonateAccount", [node])
    replacement = {
        "from": node,
        "to": bulk.address,
        "data": client.contract.encode_abi("submitUpdate", args=[3, bytes.fromhex(label_hash("reorg/branch")), 7]),
        "gas": hex(300_000),
        "nonce": hex(2),
    }
    rpc_call(anvil_devnet.rpc_url, "anvil_reorg", [2, [[replacement, 0]]])
    assert bytes(w3.eth.get_block("latest")["hash"]).hex() != orphaned_head

    stats = indexer.run_once()

    assert stats.reorgs == 1
    assert_index_matches_chain(sessions, client, bulk.deploy_block)
    with sessions() as session:
        round_three = session.scalars(select(Submission).where(Submission.round == 3)).all()
        assert [(u.node, u.update_hash, u.included) for u in round_three] == [(node, label_hash("reorg/branch"), None)]
        assert session.get(Round, 3).state.value == "open"
    fresh = new_index(tmp_path / "fresh.sqlite")
    Indexer(w3, bulk.address, fresh, start_block=bulk.deploy_block).run_once()
    assert dump(sessions) == dump(fresh)

    # The raw JSON-RPC path (anvil) decodes exactly like web3's formatted one.
    params = {"address": bulk.address, "fromBlock": bulk.deploy_block, "toBlock": "latest"}
    formatted = [ev.decode_log(w3, log) for log in w3.eth.get_logs(params)]
    assert ev.fetch_events(w3, bulk.address, bulk.deploy_block, "latest") == formatted


@pytest.mark.devnet
def test_kill_9_between_batches_then_resume(anvil_devnet, tmp_path, capsys) -> None:
    from ledger.chain.connect import connect
    from ledger.cli.main import main

    bulk = anvil_bulk_history(anvil_devnet.rpc_url, nodes=6, rounds=8, reject_every=4)
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    new_index(tmp_path / "index.sqlite")
    chain_args = ["--rpc-url", anvil_devnet.rpc_url, "--contract", bulk.address, "--database-url", url]
    chain_args += ["--from-block", str(bulk.deploy_block), "--blobs-dir", str(tmp_path / "blobs")]
    engine = db.make_engine(url)
    sessions = db.session_factory(engine)

    follower = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "index", "run", "--follow", "--batch-blocks", "1", *chain_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        middle = (bulk.deploy_block + bulk.head_block) // 2
        _poll(lambda: (_cursor_block(sessions) or 0) >= middle, what="the indexer to pass the middle", timeout=60)
        follower.send_signal(signal.SIGKILL)
        follower.wait(10)
    finally:
        if follower.poll() is None:
            follower.kill()
    stopped_at = _cursor_block(sessions)
    assert stopped_at is not None and stopped_at < bulk.head_block

    assert main(["index", "run", "--once", *chain_args]) == 0

    assert f"indexed to block {bulk.head_block}" in capsys.readouterr().out
    w3 = connect(anvil_devnet.rpc_url)
    assert_index_matches_chain(sessions, LedgerClient(w3, bulk.address), bulk.deploy_block)
    fresh = new_index(tmp_path / "fresh.sqlite")
    Indexer(w3, bulk.address, fresh, start_block=bulk.deploy_block).run_once()
    assert dump(sessions) == dump(fresh)

    assert main(["index", "rebuild", *chain_args]) == 0
    assert dump(sessions) == dump(fresh)
    engine.dispose()

    # The service refuses to start on an index without the current schema.
    capsys.readouterr()
    empty = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    serve = ["api", "serve", "--port", "0", "--rpc-url", anvil_devnet.rpc_url, "--contract", bulk.address]
    assert main([*serve, "--database-url", empty]) == 1
    assert "run `fedledger db upgrade`" in capsys.readouterr().err


def _cursor_block(sessions: sessionmaker[Session]) -> int | None:
    with sessions() as session:
        cursor = session.get(IndexerCursor, 1)
        return cursor.last_block if cursor else None


def test_index_run_refuses_an_out_of_date_schema(tmp_path, capsys) -> None:
    from ledger.cli.main import main

    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    code = main(["index", "run", "--rpc-url", "http://127.0.0.1:1", "--database-url", url, "--contract", "0x" + "11" * 20])

    assert code == 1  # refused before it even tries the chain
    assert "run `fedledger db upgrade`" in capsys.readouterr().err


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster in a temp dir on a free port (as user postgres when we are root)."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is not installed: pip install 'psycopg[binary]'")
    from ledger.index.postgres import PostgresUnavailable, throwaway_postgres

    cluster = throwaway_postgres()
    try:
        url = cluster.__enter__()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        cluster.__exit__(None, None, None)


def test_postgresql_migrates_indexes_and_serves(postgres_url, scripted) -> None:
    from ledger.api.app import create_app

    chain, store, script = scripted
    engine = db.make_engine(postgres_url)
    db.upgrade(engine)
    try:
        sessions = db.session_factory(engine)
        indexer = Indexer(chain.w3, chain.address, sessions, store=store)
        indexer.run_once()
        assert_index_matches_chain(sessions, chain.admin)

        app = create_app(store=store, ledger=chain.admin, max_blob_bytes=1 << 20, database_url=postgres_url)
        client = app.test_client()
        tip = script.versions[-1]
        lineage = client.get(f"/api/v1/models/{tip}/lineage").json
        assert [step["model_hash"] for step in lineage["items"]] == list(reversed(script.versions))
        assert client.get("/api/v1/summary").json["versions"]["total"] == len(script.versions)
        assert client.get("/api/v1/rounds/2").json["rejected_count"] == 1

        before = dump(sessions)
        indexer.rebuild()
        assert dump(sessions) == before

        # uint64 values beyond BIGINT are exact on PostgreSQL (NUMERIC(20)).
        key = (1, chain.nodes[0].account.address)
        with db.transaction(sessions) as session:
            session.get(Submission, key).num_samples = 2**64 - 1
        with sessions() as session:
            assert session.get(Submission, key).num_samples == 2**64 - 1
        app.extensions["fedledger_index_engine"].dispose()
        db.downgrade(engine, "base")
        assert db.current_revision(engine) is None
    finally:
        engine.dispose()
