"""The `/api/v1` JSON API over the index: every endpoint, its pagination and its errors.

One scripted history (genesis, 4 rounds with a rejection, an abandoned round, a revoked node,
a metadata blob missing from the store) is indexed once per module; tests only read it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ledger.api.app import create_app
from ledger.api.server import serve_in_thread
from ledger.index import db
from ledger.index.indexer import Indexer
from ledger.cli.bench.synthetic import ScriptedHistory, label_hash, scripted_history
from ledger.core.merkle import verify_proof
from ledger.core.reasons import RejectReason
from ledger.store.local import LocalBlobStore
from ledger.chain.inprocess import InProcessLedger, start_in_process_ledger

API = "/api/v1"


@dataclass
class Service:
    chain: InProcessLedger
    script: ScriptedHistory
    app: Flask

    @property
    def nodes(self) -> list[str]:
        return [node.account.address for node in self.chain.nodes]


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Service:
    root = tmp_path_factory.mktemp("api")
    chain = start_in_process_ledger(3)
    store = LocalBlobStore(root / "blobs", max_bytes=1 << 20)
    script = scripted_history(chain, store, rounds=4, advance_time=chain.advance_time)
    url = f"sqlite:///{root / 'index.sqlite'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    Indexer(chain.w3, chain.address, db.session_factory(engine), store=store).run_once()
    engine.dispose()
    app = create_app(store=store, ledger=chain.admin, max_blob_bytes=1 << 20, database_url=url)
    return Service(chain, script, app)


@pytest.fixture
def client(service) -> FlaskClient:
    return service.app.test_client()


def get(client: FlaskClient, path: str, status: int = 200) -> Any:
    response = client.get(path)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.json


def walk_pages(client: FlaskClient, path: str, key: str | None = None) -> list[Any]:
    """Follow `next` links from `path` to the end; every item of every page."""
    items: list[Any] = []
    url: str | None = path
    while url is not None:
        body = get(client, url)
        page = body[key] if key else body
        assert len(page["items"]) <= page["limit"]
        items.extend(page["items"])
        url = page["next"]
    assert len(items) == page["total"]
    return items


# --------------------------------------------------------------------------- summary


def test_summary_says_what_is_indexed(client, service) -> None:
    body = get(client, f"{API}/summary")

    assert body["contract"] == service.chain.address
    assert body["chain_id"] == service.chain.w3.eth.chain_id
    assert body["indexed_block"] == body["head_block"] == service.chain.w3.eth.block_number
    assert body["lag_blocks"] == 0
    assert body["nodes"] == {"total": 3, "active": 2}
    assert body["rounds"] == {"total": 5, "open": 0, "finalized": 4, "abandoned": 1}
    assert body["updates"] == {"total": 12, "rejected": 1}
    assert body["versions"] == {"total": 5}
    assert body["latest_version"]["model_hash"] == service.script.versions[-1]
    assert body["schema_revision"] == db.head_revision()


# --------------------------------------------------------------------------- rounds


def test_rounds_paginate_in_both_orders(client) -> None:
    first = get(client, f"{API}/rounds?limit=2")
    assert (first["total"], first["limit"], first["offset"], len(first["items"])) == (5, 2, 0, 2)
    assert first["next"] == f"{API}/rounds?limit=2&offset=2"

    assert [r["round"] for r in walk_pages(client, f"{API}/rounds?limit=2")] == [1, 2, 3, 4, 5]
    assert [r["round"] for r in walk_pages(client, f"{API}/rounds?limit=3&order=desc")] == [5, 4, 3, 2, 1]
    assert get(client, f"{API}/rounds?offset=10")["items"] == []


def test_a_round_lists_its_submissions_with_reasons(client, service) -> None:
    body = get(client, f"{API}/rounds/2")

    assert body["state"] == "finalized"
    assert body["base_model_hash"] == service.script.versions[1]
    assert body["model_hash"] == service.script.versions[2] and body["version"] == 2
    assert (body["submission_count"], body["rejected_count"], body["included_count"]) == (3, 1, 2)
    submissions = {s["node"]: s for s in body["submissions"]["items"]}
    assert set(submissions) == set(service.nodes)
    rejected = submissions[service.nodes[0]]
    assert rejected["rejection"] == {
        "code": int(RejectReason.NON_FINITE),
        "name": "non_finite",
        "description": RejectReason.NON_FINITE.description,
    }
    assert rejected["included"] is False
    assert [submissions[n]["included"] for n in service.nodes[1:]] == [True, True]
    assert submissions[service.nodes[1]]["update_hash"] == service.script.submissions[2][service.nodes[1]]
    assert submissions[service.nodes[1]]["num_samples"] == 110


def test_an_abandoned_round_says_why(client) -> None:
    body = get(client, f"{API}/rounds/5")

    assert body["state"] == "abandoned"
    assert body["abandon_reason"]["name"] == "no_submissions"
    assert body["model_hash"] is None and body["submissions"]["total"] == 0


def test_round_submissions_paginate(client) -> None:
    items = walk_pages(client, f"{API}/rounds/1?limit=1", key="submissions")
    assert len(items) == 3


# --------------------------------------------------------------------------- models


def test_models_list_every_version_with_its_metadata(client, service) -> None:
    items = walk_pages(client, f"{API}/models?limit=2")

    assert [m["model_hash"] for m in items] == service.script.versions
    genesis, first = items[0], items[1]
    assert (genesis["parent_hash"], genesis["round"], genesis["rule"], genesis["metrics"]) == (None, 0, None, None)
    assert first["rule"] == {"name": "fedavg", "params": {}}
    assert first["metrics"]["test_accuracy"] == pytest.approx(0.6)
    missing = items[3]  # round 3's blob was never stored: the chain's facts are still all there
    assert missing["model_hash"] in service.script.missing_metadata
    assert (missing["metadata_loaded"], missing["rule"], missing["included_count"]) == (False, None, 3)


def test_a_model_shows_children_and_included_updates(client, service) -> None:
    body = get(client, f"{API}/models/{service.script.versions[2]}")

    assert body["version"] == 2
    assert body["children"] == [service.script.versions[3]]
    assert body["inclusion_known"] is True
    included = body["included_updates"]["items"]
    assert {u["node"] for u in included} == set(service.nodes[1:])
    assert [u["update_hash"] for u in included] == sorted(u["update_hash"] for u in included)


def test_lineage_goes_back_to_genesis_with_each_steps_contributors(client, service) -> None:
    tip = service.script.versions[-1]

    body = get(client, f"{API}/models/{tip}/lineage")

    assert body["model_hash"] == tip and body["total"] == 5 and body["next"] is None
    assert [s["model_hash"] for s in body["items"]] == list(reversed(service.script.versions))
    assert [s["depth"] for s in body["items"]] == [4, 3, 2, 1, 0]
    round_two = body["items"][2]
    assert round_two["round"] == 2
    included = round_two["included_updates"]
    assert sorted(u["node"] for u in included["items"]) == sorted(service.nodes[1:])
    assert {u["update_hash"] for u in included["items"]} == {service.script.submissions[2][n] for n in service.nodes[1:]}
    assert included["total"] == len(service.nodes) - 1 and included["next"] is None  # all of them fit in the step
    genesis = body["items"][-1]
    assert genesis["included_updates"]["items"] == [] and genesis["included_updates"]["total"] == 0
    assert genesis["parent_hash"] is None


def test_a_lineage_step_embeds_its_first_updates_and_links_to_the_rest(client, service, monkeypatch) -> None:
    from ledger.api.v1 import models

    monkeypatch.setattr(models, "STEP_UPDATES", 1)  # the script's rounds include 1-2 updates; the page size is 10
    round_one = get(client, f"{API}/models/{service.script.versions[1]}/lineage")["items"][0]["included_updates"]

    first, total = round_one["items"], round_one["total"]
    rest, url = [], round_one["next"]
    while url is not None:
        page = get(client, url)
        assert page["total"] == total and page["offset"] == 1 + len(rest)
        rest, url = rest + page["items"], page["next"]

    assert len(first) == 1 and total == len(service.nodes)
    expected = get(client, f"{API}/models/{service.script.versions[1]}?limit=1000")["included_updates"]["items"]
    assert first + rest == expected  # the embedded head, then the rest, in hash order


def test_lineage_paginates_from_either_end(client, service) -> None:
    tip = service.script.versions[-1]
    newest_first = walk_pages(client, f"{API}/models/{tip}/lineage?limit=2")
    oldest_first = walk_pages(client, f"{API}/models/{tip}/lineage?limit=2&order=desc")

    assert [s["version"] for s in newest_first] == [4, 3, 2, 1, 0]
    assert [s["version"] for s in oldest_first] == [0, 1, 2, 3, 4]
    middle = get(client, f"{API}/models/{service.script.versions[2]}/lineage?limit=1&offset=1")
    assert (middle["total"], [s["version"] for s in middle["items"]]) == (3, [1])


# --------------------------------------------------------------------------- updates


def test_an_included_update_comes_with_a_proof_the_contract_accepts(client, service) -> None:
    update_hash = service.script.submissions[4][service.nodes[2]]

    body = get(client, f"{API}/updates/{update_hash}")

    assert body["update_hash"] == update_hash
    (submission,) = body["submissions"]["items"]
    assert (submission["round"], submission["node"], submission["included"]) == (4, service.nodes[2], True)
    inclusion = submission["inclusion"]
    assert inclusion["model_hash"] == service.script.versions[4] and inclusion["leaf"] == update_hash
    proof = inclusion["proof"]
    assert service.chain.admin.verify_inclusion(inclusion["root"], update_hash, proof)
    assert verify_proof(bytes.fromhex(inclusion["root"]), bytes.fromhex(update_hash), [bytes.fromhex(p) for p in proof])
    assert inclusion["verified"] is True
    model = service.chain.admin.model_of(inclusion["model_hash"])
    assert model is not None and model.round == 4


def test_a_rejected_update_has_no_proof(client, service) -> None:
    update_hash = service.script.submissions[2][service.nodes[0]]

    (submission,) = get(client, f"{API}/updates/{update_hash}")["submissions"]["items"]

    assert submission["rejection"]["code"] == int(RejectReason.NON_FINITE)
    assert (submission["included"], submission["inclusion"]) == (False, None)


def test_hashes_are_accepted_with_prefix_and_in_upper_case(client, service) -> None:
    update_hash = service.script.submissions[1][service.nodes[0]]
    assert get(client, f"{API}/updates/0x{update_hash.upper()}")["update_hash"] == update_hash
    model_hash = service.script.versions[1]
    assert get(client, f"{API}/models/0X{model_hash.upper()}")["model_hash"] == model_hash


# --------------------------------------------------------------------------- nodes


def test_nodes_list_contribution_counts(client, service) -> None:
    items = walk_pages(client, f"{API}/nodes?limit=2")

    by_address = {n["address"]: n for n in items}
    assert list(by_address) == service.nodes  # registration order
    assert by_address[service.nodes[0]] | {"registered_block": 0} == {
        "address": service.nodes[0],
        "active": True,
        "registered_block": 0,
        "revoked_block": None,
        "submission_count": 4,
        "included_count": 3,
        "rejected_count": 1,
        "last_round": 4,
        "rejections": [
            {"code": 7, "name": "non_finite", "description": "a tensor holds NaN or infinity", "count": 1}
        ],
    }
    revoked = by_address[service.nodes[-1]]
    assert revoked["active"] is False and revoked["revoked_block"] is not None


def test_a_node_shows_its_contribution_history(client, service) -> None:
    node = service.nodes[0]

    body = get(client, f"{API}/nodes/{node.lower()}?limit=3")

    assert body["address"] == node
    contributions = body["contributions"]
    assert contributions["total"] == 4 and contributions["next"] is not None
    assert [c["round"] for c in contributions["items"]] == [1, 2, 3]
    assert contributions["items"][0]["model_hash"] == service.script.versions[1]
    assert (contributions["items"][1]["rejection"]["name"], contributions["items"][1]["model_hash"]) == (
        "non_finite",
        None,
    )
    rest = get(client, contributions["next"])["contributions"]
    assert [c["round"] for c in rest["items"]] == [4] and rest["next"] is None


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "path",
    [
        "/rounds/abc",
        "/rounds/-1",
        "/rounds/%C2%B2",  # '²': str.isdigit says yes, int() says no (was a 500)
        "/rounds/9223372036854775808",  # 2**63: past what the index can store (was a 500)
        "/rounds/99999999999999999999",
        "/rounds?limit=%C2%B2",
        "/models?offset=%D9%A3",  # Arabic-Indic three
        "/models/xyz",
        "/models/" + "a" * 63,
        "/models/" + "g" * 64 + "/lineage",
        "/updates/0x1234",
        "/nodes/0x123",
        "/nodes/0x52908400098527886e0F7030069857D2E4169EE7",  # mixed case with a wrong checksum
        "/rounds?limit=0",
        "/rounds?limit=1001",
        "/rounds?limit=ten",
        "/models?offset=-1",
        "/nodes?order=sideways",
    ],
)
def test_malformed_input_is_a_json_400(client, path) -> None:
    body = get(client, API + path, status=400)
    assert body["error"] == "Bad Request" and body["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/rounds/99",
        "/rounds/9223372036854775807",  # the largest round the index can hold: simply not opened
        "/models/" + label_hash("never committed"),
        "/models/" + label_hash("never committed") + "/lineage",
        "/updates/" + label_hash("never submitted"),
        "/nodes/0x" + "12" * 20,
        "/no-such-endpoint",
    ],
)
def test_unknown_things_are_a_json_404(client, path) -> None:
    body = get(client, API + path, status=404)
    assert body["error"] == "Not Found"


def test_without_an_index_the_api_answers_503(tmp_path) -> None:
    app = create_app(store=LocalBlobStore(tmp_path, max_bytes=1024), ledger=None, max_blob_bytes=1024)

    body = get(app.test_client(), f"{API}/summary", status=503)

    assert "FEDLEDGER_DATABASE_URL" in body["detail"]


# --------------------------------------------------------------------------- OpenAPI


def test_openapi_documents_every_endpoint(client, service) -> None:
    document = get(client, f"{API}/openapi.json")

    assert document["openapi"].startswith("3.")
    routes = {
        rule.rule.replace("<", "{").replace(">", "}").replace("{number}", "{round}")
        for rule in service.app.url_map.iter_rules()
        if rule.rule.startswith(API)
    }
    assert routes == set(document["paths"])
    for spec in document["paths"].values():
        assert "200" in spec["get"]["responses"]
    refs = {ref for ref in _refs(document["paths"])}
    assert refs <= {f"#/components/schemas/{name}" for name in document["components"]["schemas"]}


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [value["$ref"]] if "$ref" in value else [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


# --------------------------------------------------------------------------- over HTTP


def test_the_api_over_the_real_server(service) -> None:
    with serve_in_thread(service.app) as server:
        with urllib.request.urlopen(f"{server.url}{API}/models/{service.script.versions[-1]}/lineage?limit=2") as reply:
            assert reply.headers["Content-Type"] == "application/json"
            body = json.loads(reply.read())
        assert [s["version"] for s in body["items"]] == [4, 3]
        next_page = body["next"]
        with urllib.request.urlopen(f"{server.url}{next_page}") as reply:
            assert [s["version"] for s in json.loads(reply.read())["items"]] == [2, 1]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.url}{API}/rounds/nope")
        assert refused.value.code == 400
        assert json.loads(refused.value.read())["error"] == "Bad Request"
