"""The audit page at `/`, driven in real headless Chromium over the DevTools protocol.

The app (audit API + page + verify endpoint) serves a real federation's history from the real server on a
free port. Chromium starts with `--remote-debugging-port=0` and a private profile; the test reads
the port it chose from `DevToolsActivePort`, attaches to the page target with a small websocket
client and evaluates JavaScript to read what the page rendered, clicks "verify" and waits (polling
with a deadline) for the verdict. It also records every request the page made (all same-origin:
no CDN) and every console error or CSP violation (none allowed), and saves full-page screenshots
at 1400 and 400 px wide to /tmp/fedledger-audit-page-<width>.png, checking nothing scrolls sideways
(and a private federation's to /tmp/fedledger-audit-page-private.png).

Chromium comes from Debian: `apt-get install -y chromium` (CI installs it; see .ci/).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from federation import MAX_BYTES, History, PrivateHistory, shared_history, shared_private_history
from websockets.sync.client import ClientConnection, connect

from ledger.api.app import create_app
from ledger.api.server import RunningServer, serve_in_thread
from ledger.chain.client import LedgerClient
from ledger.index.db import make_engine, session_factory, upgrade
from ledger.index.indexer import Indexer
from ledger.core.polling import WaitTimeout, poll_until

CHROMIUM = os.environ.get("FEDLEDGER_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path("/tmp/fedledger-audit-page.png")
NARROW, WIDE = 400, 1400
PRIVATE_SCREENSHOT = Path("/tmp/fedledger-audit-page-private.png")
STARTUP_SECONDS = 30.0
RENDER_SECONDS = 30.0
VERIFY_SECONDS = 30.0
POLL_SECONDS = 0.05


class DevToolsError(RuntimeError):
    """Chromium answered a DevTools command with an error, or never answered."""


class Page:
    """One page target over the Chrome DevTools Protocol: commands by id, events kept for inspection."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, timeout: float = 15.0, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        command_id = self._next_id
        self._socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DevToolsError(f"no answer to {method} within {timeout} s")
            message = json.loads(self._socket.recv(timeout=remaining))
            if message.get("id") != command_id:
                self.events.append(message)
                continue
            if "error" in message:
                raise DevToolsError(f"{method} failed: {message['error']}")
            return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (awaited if it is a promise)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float, what: str) -> Any:
        """Poll `expression` until it is truthy; fail with `what` after `timeout` seconds."""
        seen: list[Any] = [None]

        def value() -> Any:
            seen[0] = self.evaluate(expression)
            return seen[0]

        try:
            return poll_until(value, timeout=timeout, interval=POLL_SECONDS, what=what)
        except WaitTimeout:
            pytest.fail(f"gave up after {timeout} s waiting for {what} (last value {seen[0]!r})")

    def method_events(self, method: str) -> list[dict[str, Any]]:
        return [event["params"] for event in self.events if event.get("method") == method]


def _chromium_binary() -> str:
    found = shutil.which(CHROMIUM)
    if found is None:
        pytest.fail(
            f"{CHROMIUM} not found: the audit page test needs Debian's chromium "
            "(`apt-get update && apt-get install -y chromium`), or set FEDLEDGER_CHROMIUM to a Chromium binary"
        )
    return found


def _devtools_port(profile: Path, process: subprocess.Popen[bytes]) -> int:
    """The port Chromium chose for --remote-debugging-port=0 (it writes it to DevToolsActivePort)."""
    marker = profile / "DevToolsActivePort"

    def port() -> int | None:
        if process.poll() is not None:
            pytest.fail(f"chromium exited with {process.returncode} before opening its DevTools port")
        try:
            lines = marker.read_text().splitlines()
        except FileNotFoundError:
            return None
        return int(lines[0]) if lines and lines[0].isdigit() else None

    try:
        return poll_until(port, timeout=STARTUP_SECONDS, interval=POLL_SECONDS, what="the DevTools port")
    except WaitTimeout:
        pytest.fail(f"chromium wrote no DevTools port to {marker} within {STARTUP_SECONDS} s")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory) -> Iterator[Page]:
    """Headless Chromium with a private profile, attached to its first page target."""
    binary = _chromium_binary()
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its renderers join this session, so teardown can reach them all
    )
    try:
        port = _devtools_port(profile, process)
        targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        [target] = [t for t in targets if t.get("type") == "page"][:1]
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=STARTUP_SECONDS) as socket:
            page = Page(socket)
            for domain in ("Page", "Runtime", "Log", "Network"):
                page.send(f"{domain}.enable")
            yield page
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> History:
    return shared_history(tmp_path_factory)


def _serve(chain: Any, store: Any, folder: Path) -> Iterator[RunningServer]:
    """The ledger service as deployed: index database migrated and caught up, API, page and verify."""
    engine = make_engine(f"sqlite:///{folder / 'index.sqlite'}")
    upgrade(engine)
    sessions = session_factory(engine)
    reader = LedgerClient(chain.w3, chain.address)  # the service holds no key
    Indexer(chain.w3, reader.address, sessions, store=store).run_once()
    app = create_app(store=store, ledger=reader, max_blob_bytes=MAX_BYTES, index_sessions=sessions)
    try:
        with serve_in_thread(app, threads=2) as server:
            yield server
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def service(history: History, tmp_path_factory) -> Iterator[RunningServer]:
    yield from _serve(history.federation.chain, history.federation.store, tmp_path_factory.mktemp("index"))


@pytest.fixture(scope="module")
def page(chromium: Page, service: RunningServer) -> Page:
    """The audit page, loaded and rendered."""
    chromium.send("Page.navigate", url=service.url + "/")
    chromium.wait_for(
        "document.body && document.body.dataset.ready", timeout=RENDER_SECONDS, what="the page to load the API"
    )
    return chromium


def _one(selector: str) -> str:
    """JavaScript for the first element matching `selector` (quoted safely)."""
    return f"document.querySelector({json.dumps(selector)})"


def _all(selector: str) -> str:
    """JavaScript for an array of the elements matching `selector`."""
    return f"[...document.querySelectorAll({json.dumps(selector)})]"


def _texts(page: Page, selector: str) -> list[str]:
    return page.evaluate(f"{_all(selector)}.map(e => e.textContent.trim())")


def _data(page: Page, selector: str, key: str) -> list[str]:
    return page.evaluate(f"{_all(selector)}.map(e => e.dataset.{key})")


def _count(page: Page, selector: str) -> int:
    return page.evaluate(f"{_all(selector)}.length")


def test_page_and_assets_are_served_under_a_strict_csp(service: RunningServer) -> None:
    page = requests.get(service.url + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    for asset in ("audit.js", "audit.css", "favicon.svg", "reference.js", "reference.html"):
        response = requests.get(f"{service.url}/assets/{asset}", timeout=10)
        assert response.status_code == 200, asset
        assert response.headers["X-Content-Type-Options"] == "nosniff"


# --------------------------------------------------------------------------- what it renders


def test_page_loads_the_api_without_errors(page: Page) -> None:
    assert page.evaluate("document.body.dataset.ready") == "true", page.evaluate(f"{_one('#status')}.textContent")
    assert page.evaluate("document.title") == "fedledger audit"


def test_summary_numbers(page: Page) -> None:
    cards = dict(zip(_texts(page, "#summary .card dt"), _texts(page, "#summary .card dd .value")))

    assert cards == {
        "nodes": "5",
        "rounds": "6",
        "model versions": "7",
        "updates submitted": "30",
        "updates rejected": "1",
        "latest accuracy": cards["latest accuracy"],
    }
    assert cards["latest accuracy"].endswith("%")


def test_a_row_per_round_with_the_rejection_reason(page: Page, history: History) -> None:
    assert _data(page, "#rounds tbody tr", "round") == ["1", "2", "3", "4", "5", "6"]

    [rejection] = _texts(page, "#rounds tr[data-round='2'] ul.rejections li")
    assert "norm_too_large: the update moves the model further (L2 norm) than the bound allows" in rejection
    assert _data(page, "#rounds tr[data-round='2'] ul.rejections li", "node") == [history.federation.nodes[-1].address]
    assert _texts(page, "#rounds tr[data-round='1'] .rejections-cell") == ["none"]


def test_lineage_graph_has_a_node_per_version(page: Page, history: History) -> None:
    assert _data(page, "#lineage-svg g.version", "hash") == history.honest + list(history.lies.values())
    assert _texts(page, "#lineage-svg g.version .title")[:2] == ["genesis", "v1"]
    assert _count(page, "#lineage-svg path.edge") == 6  # parent → child
    # five node lanes: round 2 shows the poisoner's rejection as a cross; 5 + 4 + 5 + 3 * 5 inclusions
    assert _count(page, "#lineage-svg path.rejected") == 1
    assert _count(page, "#lineage-svg circle.included") == 29


def test_a_federation_without_dp_says_so(page: Page) -> None:
    assert _data(page, "#privacy p.policy", "encoding") == ["f32"]
    assert _texts(page, "#privacy p.policy") == ["Updates travel as f32. This federation pins no differential privacy."]
    assert _count(page, "#privacy-table") == 0


def test_accuracy_chart_has_a_point_per_round(page: Page) -> None:
    assert _data(page, "#accuracy-svg circle.point", "round") == ["1", "2", "3", "4", "5", "6"]
    assert _count(page, "#accuracy-svg path.line") == 1


# --------------------------------------------------------------------------- verify, by clicking


def _row(model_hash: str) -> str:
    return f"#versions tr[data-hash='{model_hash}']"


def _click_verify(page: Page, model_hash: str) -> str:
    page.evaluate(f"{_one(_row(model_hash) + ' button.verify')}.click()")
    page.wait_for(
        f"{_one(_row(model_hash) + ' .verdict .headline')} !== null",
        timeout=VERIFY_SECONDS,
        what=f"the verdict on {model_hash}",
    )
    return page.evaluate(f"{_one(_row(model_hash) + ' .verdict')}.innerText")


def _graph_node(model_hash: str) -> str:
    return _one(f"#lineage-svg g.version[data-hash='{model_hash}']")


def test_verify_button_shows_a_verified_verdict(page: Page, history: History) -> None:
    text = _click_verify(page, history.honest[2])

    assert text.startswith("✔ verified")
    assert "version 2 re-derived from 4 updates with arc_nnm_trimmed_mean: hash matches the chain" in text
    assert page.evaluate(f"{_graph_node(history.honest[2])}.classList.contains('verified')")


def test_verify_button_names_the_lie(page: Page, history: History) -> None:
    lie = history.lies["rule"]

    text = _click_verify(page, lie)

    assert text.startswith("✘ not verified")
    assert _data(page, _row(lie) + " .verdict li.finding", "kind") == ["rule_not_pinned", "rederived_mismatch"]
    assert page.evaluate(f"{_graph_node(lie)}.classList.contains('failed')")


def test_clicking_a_version_in_the_graph_verifies_it(page: Page, history: History) -> None:
    genesis = history.honest[0]

    page.evaluate(f"{_graph_node(genesis)}.dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")

    page.wait_for(
        f"{_graph_node(genesis)}.classList.contains('verified')",
        timeout=VERIFY_SECONDS,
        what="genesis to turn verified",
    )
    verdict = page.evaluate(f"{_one(_row(genesis) + ' .verdict')}.innerText")
    assert "version 0 (genesis) rebuilt from its pinned task and seed" in verdict


# --------------------------------------------------------------------------- hygiene, and a picture


def test_every_request_stayed_on_the_service(page: Page, service: RunningServer) -> None:
    urls = [event["request"]["url"] for event in page.method_events("Network.requestWillBeSent")]
    assert urls, "the page made no requests"
    assert [url for url in urls if not url.startswith(service.url + "/")] == []
    responses = [event["response"] for event in page.method_events("Network.responseReceived")]
    assert [(r["url"], r["status"]) for r in responses if r["status"] >= 400] == []


def test_no_console_errors_or_csp_violations(page: Page) -> None:
    logged = [e["entry"]["text"] for e in page.method_events("Log.entryAdded") if e["entry"]["level"] == "error"]
    thrown = [e["exceptionDetails"] for e in page.method_events("Runtime.exceptionThrown")]
    console = [e["args"] for e in page.method_events("Runtime.consoleAPICalled") if e["type"] == "error"]
    assert (logged, thrown, console) == ([], [], [])


# --------------------------------------------------------------------------- attestations, checked, nodes, metrics, blobs


def test_each_version_shows_its_attestation_and_the_lies_are_red_with_findings(page: Page, history: History) -> None:
    for model_hash in history.honest:
        assert page.evaluate(f"{_one(_row(model_hash))}.className") == "attested-ok"
        assert _data(page, _row(model_hash) + " ul.attested > li", "ok") == ["true"]
    for lie, model_hash in history.lies.items():
        assert page.evaluate(f"{_one(_row(model_hash))}.className") == "attested-failed", lie
        assert _data(page, _row(model_hash) + " ul.attested > li", "auditor") == [history.auditor]
    kinds = _data(page, _row(history.lies["update"]) + " ul.attested li.finding", "kind")
    assert {"root_mismatch", "not_submitted", "rederived_mismatch"} <= set(kinds)
    [block] = _texts(page, _row(history.lies["rule"]) + " ul.attested .block")
    assert block == f"block {history.attested[4].block_number}"


def test_an_attestation_links_its_report(page: Page, history: History, service: RunningServer) -> None:
    [link] = page.evaluate(f"{_all(_row(history.lies['rule']) + ' ul.attested a.blob')}.map(a => a.getAttribute('href'))")

    report = requests.get(service.url + link, timeout=10)

    assert link == f"/blobs/{history.attested[4].report_hash}"
    assert hashlib.sha256(report.content).hexdigest() == history.attested[4].report_hash
    assert report.json()["verdict"]["model_hash"] == history.lies["rule"]


def test_the_page_says_every_answer_was_checked_against_the_chain(page: Page) -> None:
    banner = page.evaluate(f"{_one('#chain-check')}.textContent")

    assert page.evaluate(f"{_one('#chain-check')}.className") == "chain-check checked"
    assert banner.startswith("✔ Every answer below was compared with the chain's events")


def test_nodes_section_tallies_each_node(page: Page, history: History) -> None:
    nodes = [node.address for node in history.federation.nodes]
    assert _data(page, "#nodes tbody tr", "node") == nodes

    poisoner = f"#nodes tr[data-node='{nodes[-1]}']"
    cells = _texts(page, poisoner + " td")
    assert cells[1:4] == ["active", "6", "5"]  # submitted in all six rounds, rejected once
    assert _texts(page, poisoner + " .node-rejections li") == ["norm_too_large × 1"]
    assert cells[5] == "round 6"
    assert _texts(page, f"#nodes tr[data-node='{nodes[0]}'] .node-rejections") == ["none"]


def test_hovering_a_point_shows_every_recorded_metric(page: Page) -> None:
    point = _one('#accuracy-svg circle.point[data-round="3"]')
    page.evaluate(f"{point}.dispatchEvent(new MouseEvent('mouseenter'))")

    tooltip = _one("#accuracy-tooltip")
    assert page.evaluate(f"{tooltip}.hidden") is False
    assert _data(page, "#accuracy-tooltip tr", "metric") == ["test_accuracy", "test_loss", "test_samples"]
    assert page.evaluate(f"{tooltip}.textContent").startswith("round 3 · version 3")
    page.evaluate(f"{point}.dispatchEvent(new MouseEvent('mouseleave'))")
    assert page.evaluate(f"{tooltip}.hidden") is True


def test_every_blob_has_a_download_link_that_serves_its_bytes(page: Page, history: History, service: RunningServer) -> None:
    links = page.evaluate(f"{_all('#versions td.blobs a.blob')}.map(a => a.getAttribute('href'))")
    assert len(links) == 2 * len(history.honest + list(history.lies.values()))
    page.evaluate(f"{_all('#rounds details')}.forEach(d => {{ d.open = true; }})")
    page.wait_for(f"{_all('#rounds ul.updates a.blob')}.length === 30", timeout=RENDER_SECONDS, what="every update link")
    links += page.evaluate(f"{_all('#rounds ul.updates a.blob')}.map(a => a.getAttribute('href'))")

    for link in links[:3] + links[-3:]:
        blob = requests.get(service.url + link, timeout=10)
        assert blob.status_code == 200 and hashlib.sha256(blob.content).hexdigest() == link.rsplit("/", 1)[1]


def test_the_api_reference_is_rendered_from_the_openapi_document(chromium: Page, service: RunningServer) -> None:
    document = requests.get(f"{service.url}/api/v1/openapi.json", timeout=10).json()
    chromium.send("Page.navigate", url=service.url + "/api")
    chromium.wait_for("document.body && document.body.dataset.ready", timeout=RENDER_SECONDS, what="the reference to render")

    assert chromium.evaluate("document.body.dataset.ready") == "true"
    assert _data(chromium, "#paths article.endpoint", "path") == list(document["paths"])
    assert _data(chromium, "#schema-list article.schema", "schema") == list(document["components"]["schemas"])
    assert "409" in _data(chromium, "#paths article[data-path='/api/v1/models/{model_hash}/lineage'] tr", "status")
    chromium.send("Page.navigate", url=service.url + "/")  # back to the audit page for the tests below
    chromium.wait_for("document.body && document.body.dataset.ready", timeout=RENDER_SECONDS, what="the page to load again")


@pytest.mark.parametrize("width", [WIDE, NARROW])
def test_screenshot_without_horizontal_page_scroll(page: Page, width: int) -> None:
    """The full page at a desktop and a phone width, for a person to look at; nothing scrolls sideways."""
    page.send("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=width == NARROW)
    page.wait_for(
        f"window.innerWidth === {width} && {_one('#accuracy-svg')}.getBoundingClientRect().width <= {width}",
        timeout=RENDER_SECONDS,
        what=f"the page to reflow to {width} px",
    )
    scroll_width, client_width, height = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth, document.documentElement.scrollHeight]"
    )
    wider = page.evaluate(
        f"{_all('body *')}.filter(e => e.getBoundingClientRect().right > {client_width} + 1 && !e.closest('.figure.scroll'))"
        ".map(e => e.tagName + '.' + e.className).slice(0, 5)"
    )

    assert scroll_width == client_width <= width  # the page never scrolls sideways (a vertical scrollbar may take room)
    assert wider == []  # only the lineage graph is wider than the page, inside its own scrolling box
    page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=width == NARROW)
    shot = page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    path = SCREENSHOT.with_name(f"fedledger-audit-page-{width}.png")
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000


def _screenshot(page: Page, path: Path) -> None:
    """The full page at desktop width, for a person to look at."""
    width, height = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    page.send(
        "Emulation.setDeviceMetricsOverride", width=max(width, 1280), height=height, deviceScaleFactor=1, mobile=False
    )
    shot = page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    path.write_bytes(base64.b64decode(shot["data"]))


# --------------------------------------------------------------------------- a private federation (last: it navigates away)


@pytest.fixture(scope="module")
def private(tmp_path_factory) -> PrivateHistory:
    return shared_private_history(tmp_path_factory)


@pytest.fixture(scope="module")
def private_service(private: PrivateHistory, tmp_path_factory) -> Iterator[RunningServer]:
    yield from _serve(private.chain, private.store, tmp_path_factory.mktemp("private-index"))


def test_the_api_gives_the_pinned_policy_and_each_nodes_epsilon_per_round(private: PrivateHistory, private_service: RunningServer) -> None:
    body = requests.get(f"{private_service.url}/api/v1/privacy", timeout=10).json()
    one, two = private.addresses[:2]

    assert body["encoding"] == "int8"
    assert body["policy"]["noise_multiplier"] == 3.205 and body["policy"]["epsilon_budget"] == "1.000000"
    assert [r["round"] for r in body["rounds"]["items"]] == [1, 2]
    assert body["rounds"]["items"][0]["epsilon"][one] == "0.701602"
    assert body["rounds"]["items"][0]["epsilon"][private.addresses[4]] == "1.289960"  # over budget: recorded, rejected
    assert body["rounds"]["items"][1]["epsilon"][two] == "0.953006"
    version = requests.get(f"{private_service.url}/api/v1/models/{private.results[1].model_hash}", timeout=10).json()
    assert version["privacy"][two] == "0.953006"


def test_the_page_shows_each_nodes_epsilon_over_rounds(chromium: Page, private: PrivateHistory, private_service: RunningServer) -> None:
    chromium.send("Page.navigate", url=private_service.url + "/")
    chromium.wait_for("document.body && document.body.dataset.ready", timeout=RENDER_SECONDS, what="the private page")
    node0, node4 = private.addresses[0], private.addresses[4]

    assert "Updates travel as int8. Nodes train with DP-SGD (Opacus): noise multiplier 3.205" in _texts(chromium, "#privacy p.policy")[0]
    assert _texts(chromium, "#privacy-table thead th") == ["node", "round 1", "round 2", "budget spent"]
    assert _texts(chromium, f"#privacy-table tr[data-node='{node0}'] td")[1:] == ["0.701602", "0.953006", "95.3%"]
    assert _texts(chromium, f"#privacy-table tr[data-node='{node4}'] td.over") == ["1.289960"]
    assert chromium.evaluate(f"{_one('#privacy')}.childNodes.length") == 2  # the policy and the table, no stray text
    rejection = _texts(chromium, "#rounds tr[data-round='1'] ul.rejections li")
    assert any("privacy_budget_exhausted" in text for text in rejection)
    assert any("privacy_claim_invalid" in text for text in rejection)
    _screenshot(chromium, PRIVATE_SCREENSHOT)
