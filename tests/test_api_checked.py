"""The API never serves the index unchecked: every answer is compared with the chain, or says it was not.

The shared federation history (round 2 rejected a poisoned update) is indexed into a private
SQLite file; two rows are then edited by hand, as someone with write access to the cache could:
the poisoned update is marked included, and a genuine inclusion is dropped. The API must answer
409 naming both, and `fedledger index rebuild` must repair them.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from federation import MAX_BYTES, History, shared_history
from flask.testing import FlaskClient

from ledger.api.app import create_app
from ledger.chain.client import LedgerClient
from ledger.cli.main import main
from ledger.core.merkle import verify_proof
from ledger.index import db
from ledger.index.indexer import Indexer
from ledger.chain.inprocess import start_in_process_ledger
from ledger.cli.bench.synthetic import label_hash, scripted_history
from ledger.store.local import LocalBlobStore

API = "/api/v1"


@dataclass
class Service:
    history: History
    database: Path
    client: FlaskClient

    @property
    def reader(self) -> LedgerClient:
        return LedgerClient(self.history.federation.chain.w3, self.history.federation.chain.address)


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> History:
    return shared_history(tmp_path_factory)


@pytest.fixture(scope="module")
def indexed(history: History, tmp_path_factory) -> Path:
    """The history indexed once into SQLite; tests that edit rows work on copies."""
    database = tmp_path_factory.mktemp("index") / "index.sqlite"
    engine = db.make_engine(f"sqlite:///{database}")
    db.upgrade(engine)
    chain = history.federation.chain
    Indexer(chain.w3, chain.address, db.session_factory(engine), store=history.federation.store).run_once()
    engine.dispose()
    return database


def _serve(history: History, database: Path) -> Iterator[Service]:
    chain = history.federation.chain
    reader = LedgerClient(chain.w3, chain.address)
    app = create_app(store=history.federation.store, ledger=reader, max_blob_bytes=MAX_BYTES, database_url=f"sqlite:///{database}")
    with app.test_client() as client:
        yield Service(history, database, client)
    app.extensions["fedledger_index_engine"].dispose()


@pytest.fixture(scope="module")
def service(history: History, indexed: Path) -> Iterator[Service]:
    """Read-only: serves the pristine index."""
    yield from _serve(history, indexed)


@pytest.fixture
def edited(history: History, indexed: Path, tmp_path) -> Iterator[Service]:
    """A private copy of the index, for tests that edit its rows."""
    copy = tmp_path / "index.sqlite"
    shutil.copyfile(indexed, copy)
    yield from _serve(history, copy)


def _poisoned_and_genuine(history: History) -> tuple[tuple[str, str], tuple[str, str]]:
    """(node, update hash) of round 2's rejected update, and of one update round 1 really included."""
    [(poisoned, _, _)] = history.federation.results[1].rejected
    genuine = history.federation.results[0].included[0]
    return (poisoned.node, poisoned.update_hash), (genuine.node, genuine.update_hash)


def _edit(database: Path, statement: str, *args: object) -> None:
    with sqlite3.connect(database) as connection:
        assert connection.execute(statement, args).rowcount == 1


@pytest.mark.parametrize(
    "path",
    [
        "/summary", "/models", "/models/{tip}", "/models/{tip}/lineage", "/rounds", "/rounds/2",
        "/updates/{update}", "/nodes", "/nodes/{node}", "/privacy",
    ],  # fmt: skip
)
def test_every_index_answer_is_checked_against_the_chain(service: Service, path: str) -> None:
    tip = service.history.honest[-1]
    _, (node, update) = _poisoned_and_genuine(service.history)

    response = service.client.get(API + path.format(tip=tip, update=update, node=node))

    assert response.status_code == 200, response.json
    assert response.json["checked_against_chain"] is True
    assert response.json["checked_at_block"] == int(service.history.federation.chain.w3.eth.block_number)


def test_without_a_chain_the_answer_says_it_is_unchecked(service: Service, history: History) -> None:
    app = create_app(store=history.federation.store, ledger=None, max_blob_bytes=MAX_BYTES, database_url=f"sqlite:///{service.database}")

    body = app.test_client().get(f"{API}/models/{history.honest[-1]}/lineage").json

    assert body["checked_against_chain"] is False
    assert "no chain connection" in body["unchecked_reason"]
    app.extensions["fedledger_index_engine"].dispose()


def test_an_edited_index_answers_409_naming_each_difference_and_rebuild_repairs_it(
    edited: Service, monkeypatch, tmp_path
) -> None:
    service = edited
    history = service.history
    (poisoned_node, poisoned), (genuine_node, genuine) = _poisoned_and_genuine(history)
    _edit(service.database, "UPDATE updates SET included = 1 WHERE round = 2 AND node = ?", poisoned_node)
    _edit(service.database, "UPDATE updates SET included = 0 WHERE round = 1 AND node = ?", genuine_node)

    lineage = service.client.get(f"{API}/models/{history.honest[-1]}/lineage")

    assert lineage.status_code == 409
    assert "fedledger index rebuild" in lineage.json["detail"]
    named = {(d["key"], d["field"], d["index"], d["chain"]) for d in lineage.json["differences"]}
    assert named == {(f"round 2 / {poisoned_node}", "included", True, False), (f"round 1 / {genuine_node}", "included", False, True)}
    details = " ".join(d["detail"] for d in lineage.json["differences"])
    assert "norm_too_large" in details and genuine in details
    for path in (f"/updates/{genuine}", f"/updates/{poisoned}", "/rounds/1", "/rounds/2", f"/models/{history.honest[1]}", f"/nodes/{genuine_node}"):
        assert service.client.get(API + path).status_code == 409, path

    monkeypatch.setenv("FEDLEDGER_HOME", str(tmp_path / "var"))
    monkeypatch.setattr("ledger.cli.wiring.ledger_client", lambda args, account: service.reader)
    code = main(["index", "rebuild", "--database-url", f"sqlite:///{service.database}", "--blobs-dir", str(history.federation.blobs_dir)])

    assert code == 0
    repaired = service.client.get(f"{API}/models/{history.honest[-1]}/lineage")
    assert repaired.status_code == 200 and repaired.json["checked_against_chain"] is True
    update = service.client.get(f"{API}/updates/{genuine}").json
    [proof] = [s["inclusion"] for s in update["submissions"]["items"] if s["round"] == 1]
    assert proof["verified"] and verify_proof(bytes.fromhex(proof["root"]), bytes.fromhex(genuine), [bytes.fromhex(p) for p in proof["proof"]])


def test_a_version_row_with_another_metadata_hash_is_named(edited: Service) -> None:
    service = edited
    history = service.history
    _edit(service.database, "UPDATE model_versions SET metadata_hash = ? WHERE version = 2", "ab" * 32)

    body = service.client.get(f"{API}/models/{history.honest[-1]}/lineage").json

    assert [(d["what"], d["key"], d["field"]) for d in body["differences"]] == [("version", history.honest[2], "metadata_hash")]


def test_a_flattering_accuracy_is_caught_against_the_metadata_blob(edited: Service) -> None:
    history = edited.history
    _edit(edited.database, """UPDATE model_versions SET metrics = '{"test_accuracy": 0.999}' WHERE version = 1""")

    body = edited.client.get(f"{API}/models").json

    [difference] = body["differences"]
    assert (difference["key"], difference["field"], difference["index"]) == (history.honest[1], "metrics", {"test_accuracy": 0.999})
    assert difference["chain"]["test_accuracy"] == round(history.federation.results[0].accuracy, 6)


def test_an_index_behind_the_chain_is_checked_as_of_its_block(tmp_path) -> None:
    chain = start_in_process_ledger(2)
    store = LocalBlobStore(tmp_path / "blobs", max_bytes=1 << 20)
    script = scripted_history(chain, store, rounds=2)
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    Indexer(chain.w3, chain.address, db.session_factory(engine), store=store).run_once()
    engine.dispose()
    indexed = int(chain.w3.eth.block_number)
    chain.admin.open_round(3, script.versions[-1], chain.now() + 3600, 1)  # on chain, not indexed
    chain.nodes[0].submit_update(3, label_hash("late"), 7)
    app = create_app(store=store, ledger=LedgerClient(chain.w3, chain.address), max_blob_bytes=1 << 20, database_url=url)

    body = app.test_client().get(f"{API}/rounds").json

    assert body["checked_against_chain"] is True and body["checked_at_block"] == indexed
    assert [r["round"] for r in body["items"]] == [1, 2]
    app.extensions["fedledger_index_engine"].dispose()


def test_checked_answers_and_their_409_come_through_the_real_server(edited: Service) -> None:
    """uvicorn + a2wsgi behind the guard, as `fedledger api serve` runs it."""
    import requests

    from ledger.api.server import serve_in_thread

    history = edited.history
    chain = history.federation.chain
    app = create_app(
        store=history.federation.store,
        ledger=LedgerClient(chain.w3, chain.address),
        max_blob_bytes=MAX_BYTES,
        database_url=f"sqlite:///{edited.database}",
    )
    lineage = f"{API}/models/{history.honest[-1]}/lineage"
    (poisoned_node, _), _ = _poisoned_and_genuine(history)
    with serve_in_thread(app, threads=2) as server:
        honest = requests.get(server.url + lineage, timeout=30)
        _edit(edited.database, "UPDATE updates SET included = 1 WHERE round = 2 AND node = ?", poisoned_node)
        lying = requests.get(server.url + lineage, timeout=30)
    app.extensions["fedledger_index_engine"].dispose()

    assert honest.status_code == 200 and honest.json()["checked_against_chain"] is True
    assert lying.status_code == 409, lying.text
    assert [d["field"] for d in lying.json()["differences"]] == ["included"]


def test_openapi_says_which_answers_are_checked(service: Service) -> None:
    document = service.client.get(f"{API}/openapi.json").json

    unchecked = {
        "/api/v1/models/{model_hash}/verify",
        "/api/v1/openapi.json",
        "/api/v1/attestations",  # read from the chain, not the index
        "/api/v1/models/{model_hash}/attestations",
        "/api/v1/models/{model_hash}/export",  # built from the chain and the blob store, not the index
    }
    for path, spec in document["paths"].items():
        responses = spec["get"]["responses"]
        assert ("409" in responses) == (path not in unchecked), path
    assert "checked_against_chain" in document["components"]["schemas"]["Checked"]["properties"]


# --------------------------------------------------------------------------- attestations, from the chain


def test_attestations_are_read_from_the_chain_with_their_reports(service: Service) -> None:
    history = service.history
    body = service.client.get(f"{API}/attestations").json

    assert body["from_chain"] is True and body["total"] == 7
    verdicts = {a["model_hash"]: a for a in body["items"]}
    assert [verdicts[h]["ok"] for h in history.honest] == [True] * 4
    assert [verdicts[h]["ok"] for h in history.lies.values()] == [False] * 3
    assert {a["auditor"] for a in body["items"]} == {history.auditor}
    rule_lie = verdicts[history.lies["rule"]]
    assert [f["kind"] for f in rule_lie["report"]["findings"]] == ["rule_not_pinned", "rederived_mismatch"]
    assert rule_lie["report"]["verified"] is False and rule_lie["resolved"] is False


def test_a_versions_attestations_and_the_summary_count_the_failures(service: Service) -> None:
    history = service.history
    lie = service.client.get(f"{API}/models/{history.lies['samples']}/attestations").json

    assert (lie["attestation_quorum"], lie["ok_count"], lie["failed_count"], lie["unresolved_count"]) == (0, 0, 1, 1)
    assert [f["kind"] for f in lie["attestations"][0]["report"]["findings"]] == ["submission_mismatch"]
    summary = service.client.get(f"{API}/summary").json
    assert summary["attestations"] == {"quorum": 0, "total": 7, "failed": 3, "failed_versions": 3}
    assert service.client.get(f"{API}/models/{'ab' * 32}/attestations").status_code == 404


# --------------------------------------------------------------------------- pages check what they show


def _bulk_service(rpc_url: str, tmp_path: Path) -> tuple[Any, FlaskClient]:
    """Two rounds of 20 submissions on anvil (2 rejected each: 18 included), indexed and served."""
    from ledger.chain.connect import connect
    from ledger.cli.bench.synthetic import anvil_bulk_history

    bulk = anvil_bulk_history(rpc_url, nodes=20, rounds=2, reject_every=10)
    w3 = connect(rpc_url)
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    Indexer(w3, bulk.address, db.session_factory(engine), start_block=bulk.deploy_block).run_once()
    engine.dispose()
    app = create_app(
        store=LocalBlobStore(tmp_path / "blobs", 1 << 20), ledger=LedgerClient(w3, bulk.address),
        max_blob_bytes=1 << 20, database_url=url, ledger_from_block=bulk.deploy_block,
    )  # fmt: skip
    return app, app.test_client()


def test_a_page_checks_what_it_shows_and_the_page_showing_an_edited_row_answers_409(anvil_devnet, tmp_path) -> None:
    """Rounds of 18 included updates: a lineage step embeds 10 of them and the total, and is checked
    for those without reading the other 8 (that keeps its cost flat at 1,000-update rounds). A row
    it does not show, edited, is caught by the pages that show it; a changed total, by the lineage."""
    from ledger.api.v1.models import STEP_UPDATES

    app, client = _bulk_service(anvil_devnet.rpc_url, tmp_path)
    tip = client.get(f"{API}/models?limit=1&order=desc").json["items"][0]["model_hash"]
    lineage = f"{API}/models/{tip}/lineage"
    step = client.get(lineage).json["items"][0]
    assert step["round"] == 2 and step["included_updates"]["total"] == 18 > STEP_UPDATES
    shown = {u["update_hash"] for u in step["included_updates"]["items"]}
    with sqlite3.connect(tmp_path / "index.sqlite") as connection:
        unshown = [h for (h,) in connection.execute("SELECT update_hash FROM updates WHERE round = 2 AND included = 1") if h not in shown]
    assert len(unshown) == 18 - STEP_UPDATES

    _edit(tmp_path / "index.sqlite", "UPDATE updates SET num_samples = num_samples + 1 WHERE update_hash = ?", unshown[0])

    assert client.get(lineage).status_code == 200  # it shows nothing of that row
    rest = client.get(step["included_updates"]["next"])
    assert rest.status_code == 409
    assert [(d["field"], d["index"] - d["chain"]) for d in rest.json["differences"]] == [("num_samples", 1)]
    assert client.get(f"{API}/rounds/2").status_code == 409

    _edit(tmp_path / "index.sqlite", "UPDATE updates SET included = 0 WHERE update_hash = ?", unshown[1])

    dropped = client.get(lineage)
    assert dropped.status_code == 409  # the step's total is now one short of the chain's count
    assert {(d["field"], d["index"], d["chain"]) for d in dropped.json["differences"]} >= {("included", False, True)}
    assert unshown[1] in " ".join(d["detail"] for d in dropped.json["differences"])
    app.extensions["fedledger_index_engine"].dispose()


def test_a_page_cannot_show_another_row_in_place_of_one_the_chain_included(anvil_devnet, tmp_path) -> None:
    """The total unchanged and every shown row genuine, yet the first included update dropped and a
    rejected one (sorting after the 10th) marked included: the first page would show the 11th in
    the first one's place. Each page of included updates must be the chain's own at its position."""
    app, client = _bulk_service(anvil_devnet.rpc_url, tmp_path)
    tip = client.get(f"{API}/models?limit=1&order=desc").json["items"][0]["model_hash"]
    with sqlite3.connect(tmp_path / "index.sqlite") as connection:
        included = [h for (h,) in connection.execute("SELECT update_hash FROM updates WHERE round = 2 AND included = 1 ORDER BY update_hash, node")]
        rejected = [h for (h,) in connection.execute("SELECT update_hash FROM updates WHERE round = 2 AND included = 0")]
    later = [h for h in rejected if h > included[9]]
    if not later:
        pytest.fail(f"the history has no rejected update sorting after the 10th included one: {rejected}")
    _edit(tmp_path / "index.sqlite", "UPDATE updates SET included = 0 WHERE update_hash = ?", included[0])
    _edit(tmp_path / "index.sqlite", "UPDATE updates SET included = 1 WHERE update_hash = ?", later[0])

    for path in (f"/models/{tip}/lineage", f"/models/{tip}?limit=10", f"/models/{tip}/included?limit=10", "/rounds/2"):
        answer = client.get(API + path)
        assert answer.status_code == 409, path
        assert {(d["index"], d["chain"]) for d in answer.json["differences"]} == {(False, True), (True, False)}, path
    app.extensions["fedledger_index_engine"].dispose()
