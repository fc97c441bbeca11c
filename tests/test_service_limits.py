"""The ledger service against slow, idle, unsigned and greedy clients, over real sockets.

The service runs under its real server (uvicorn + a2wsgi + the connection guard) on a free port,
with short limits so each behaviour shows within a second or two; roles come from a fresh
in-process chain. Raw sockets play the hostile clients (requests would hide what they do).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.api.app import create_app
from ledger.api.guard import ConnectionLimits
from ledger.api.server import RunningServer, ServerOptions, serve_in_thread
from ledger.chain.client import LedgerClient
from ledger.chain.inprocess import InProcessLedger
from ledger.core.hashing import sha256_hex
from ledger.core.polling import poll_until
from ledger.store.http import HttpBlobStore, QuotaExceeded, UploadRefused
from ledger.store.local import LocalBlobStore
from ledger.store.protocol import SIGNATURE_HEADER, sign_upload

LIMIT = 256 * 1024 * 1024
QUOTA = 3 * 1024 * 1024
FAST = ConnectionLimits(
    max_connections=40, max_per_client=8, header_timeout=1.0, body_window=0.5, body_min_bytes=64 * 1024
)


@dataclass
class Service:
    chain: InProcessLedger
    blobs: LocalBlobStore
    server: RunningServer

    def sign(self, account, name: str) -> str:
        return sign_upload(account, name, self.chain.admin.chain_id, self.chain.address)

    def store(self, account) -> HttpBlobStore:
        return HttpBlobStore.from_ledger(self.server.url, self.chain.admin, account=account, max_bytes=LIMIT, timeout=10)

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(5)
        sock.connect((self.server.host, self.server.port))
        return sock


@contextlib.contextmanager
def _serving(chain: InProcessLedger, root: Path, limits: ConnectionLimits) -> Iterator[Service]:
    blobs = LocalBlobStore(root, max_bytes=LIMIT)
    reader = LedgerClient(chain.w3, chain.address)
    app = create_app(store=blobs, ledger=reader, max_blob_bytes=LIMIT, node_quota_bytes=QUOTA)
    with serve_in_thread(app, options=ServerOptions(threads=4, limits=limits)) as server:
        yield Service(chain, blobs, server)


@pytest.fixture
def service(ledger_chain: InProcessLedger, tmp_path: Path) -> Iterator[Service]:
    with _serving(ledger_chain, tmp_path / "blobs", FAST) as serving:
        yield serving


def _put_head(name: str, size: int, signature: str | None = None, extra: str = "") -> bytes:
    signed = f"{SIGNATURE_HEADER}: {signature}\r\n" if signature else ""
    return f"PUT /blobs/{name} HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n{signed}{extra}\r\n".encode()


def _read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or goes quiet for the socket's timeout)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def _disk_bytes_written() -> int:
    """Bytes this process has dirtied in the page cache so far (what will reach the disk)."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["write_bytes"])


def _files_under(*roots: Path) -> list[Path]:
    return [path for root in roots if root.exists() for path in root.rglob("*") if path.is_file()]


# ---------------------------------------------------------------- decided before the body


def test_unsigned_large_body_is_refused_before_a_byte_of_it_is_buffered(service: Service) -> None:
    sent = 16 * 1024 * 1024
    name = sha256_hex(b"never sent whole")
    sock = service.connect()
    written_before = _disk_bytes_written()

    sock.sendall(_put_head(name, 200 * 1024 * 1024))  # declares 200 MiB, unsigned
    sock.sendall(os.urandom(sent))  # the server discards this after answering, never stores it
    answer = _read_answer(sock)
    written = _disk_bytes_written() - written_before
    sock.close()

    assert answer.startswith(b"HTTP/1.1 401 "), answer[:80]
    assert b"missing X-Fedledger-Signature" in answer
    assert written < 64 * 1024, f"{written} bytes reached the page cache for a refused upload"
    assert _files_under(service.blobs.root) == []
    assert service.server.guard.unread_bodies == 1

    # The control: the same measure sees a signed upload's bytes, so the zero above is not blindness.
    body = os.urandom(2 * 1024 * 1024)
    written_before = _disk_bytes_written()
    service.store(service.chain.nodes[0].account).put(body)
    assert _disk_bytes_written() - written_before >= len(body)


def test_refusals_reach_a_client_still_sending_its_body(service: Service) -> None:
    stranger = service.chain.new_account("stranger")
    body = os.urandom(12 * 1024 * 1024)  # more than the socket buffers hold: the server answers mid-body

    with pytest.raises(UploadRefused) as refused:
        service.store(stranger).put(body)

    assert refused.value.status == 403
    assert not service.blobs.exists(sha256_hex(body))


def test_expect_100_continue_is_sent_only_once_the_upload_is_admitted(service: Service) -> None:
    node = service.chain.nodes[0].account
    body = os.urandom(300_000)
    name = sha256_hex(body)

    refused = service.connect()
    refused.sendall(_put_head(name, len(body), service.sign(node, "ab" * 32), "Expect: 100-continue\r\n"))
    refused_answer = _read_answer(refused)
    admitted = service.connect()
    admitted.sendall(_put_head(name, len(body), service.sign(node, name), "Expect: 100-continue\r\n"))
    interim = admitted.recv(100)
    admitted.sendall(body)
    final = _read_answer(admitted)

    assert refused_answer.startswith(b"HTTP/1.1 403 ")  # signed for another hash: never told to continue
    assert interim.startswith(b"HTTP/1.1 100 ")
    assert b" 201 " in final
    assert service.blobs.get(name) == body
    refused.close()
    admitted.close()


def test_chunked_uploads_are_refused_and_a_long_chunk_line_costs_nothing(service: Service) -> None:
    node = service.chain.nodes[0].account
    name = sha256_hex(b"chunked")
    head = _put_head(name, 0, service.sign(node, name)).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
    chunked = service.connect()
    chunked.sendall(head + b"5\r\nabcde\r\n0\r\n\r\n")
    assert _read_answer(chunked).startswith(b"HTTP/1.1 411 ")
    chunked.close()

    started = time.process_time()
    for _ in range(4):  # a chunk-size line that never ends: h11 gives up at 16 KiB (400, then close)
        long_line = service.connect()
        with contextlib.suppress(ConnectionError):
            long_line.sendall(b"POST /api/v1/summary HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            long_line.sendall(b"1" * (1 << 20))
        answer = _read_answer(long_line)
        # h11 refuses the line (400), or Flask answers the POST first (405) and h11 then drops the
        # rest; either answer may be lost to the reset. What matters is the CPU below.
        assert answer == b"" or answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 405 "))
        long_line.close()
    # waitress 3.0.2 re-scanned the whole line on every read: 4 MiB of it cost ~1.3 s of CPU, n².
    assert time.process_time() - started < 2.0
    assert not service.blobs.exists(name)
    assert service.store(node).put(b"still served") == sha256_hex(b"still served")


# ---------------------------------------------------------------- slow and idle clients


def test_a_header_drip_and_an_idle_connection_are_cut_at_the_header_deadline(service: Service) -> None:
    idle = service.connect()
    drip = service.connect()
    drip.sendall(b"GET /api/v1/summary HTTP/1.1\r\n")
    started = time.monotonic()
    drip.settimeout(0.1)
    answer = b""
    while time.monotonic() - started < 4 and not answer:
        try:
            drip.sendall(b"X")
            answer = drip.recv(100)
        except TimeoutError:
            continue
        except OSError:
            break

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert _read_answer(idle).startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < FAST.header_timeout + 1.5
    assert service.server.guard.header_timeouts >= 2
    drip.close()
    idle.close()


def test_a_slow_body_from_a_registered_node_is_cut_and_leaves_nothing(service: Service) -> None:
    node = service.chain.nodes[1].account
    body = os.urandom(1_000_000)
    name = sha256_hex(body)
    slow = service.connect()
    slow.sendall(_put_head(name, len(body), service.sign(node, name)) + body[:1000])
    cut = False
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not cut:
        try:
            slow.sendall(b"x" * 10)
            time.sleep(0.2)  # the drip's pace: 50 bytes a second
        except OSError:
            cut = True
    slow.close()

    assert cut
    assert service.server.guard.slow_bodies == 1
    poll_until(lambda: not _files_under(service.blobs.root), timeout=5, what="the temp file to go")
    service.store(node).put(body)  # the cut upload gave its quota and in-flight slot back
    assert service.blobs.get(name) == body


def test_a_client_that_will_not_read_a_large_download_is_cut(service: Service) -> None:
    blob = os.urandom(32 * 1024 * 1024)  # far more than the socket buffers hold
    name = service.store(service.chain.admin.account).put(blob)  # aggregators have no byte quota
    reader = service.connect()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    reader.sendall(f"GET /blobs/{name} HTTP/1.1\r\nHost: t\r\n\r\n".encode())

    poll_until(lambda: service.server.guard.slow_readers == 1, timeout=10, what="the slow reader to be cut")
    received = _read_answer(reader)

    assert received.startswith(b"HTTP/1.1 200 ") and len(received) < len(blob)
    reader.close()


def test_the_per_client_cap_refuses_with_503_while_other_clients_are_served(service: Service) -> None:
    held = [service.connect() for _ in range(FAST.max_per_client)]
    refused = service.connect()
    other = service.connect("127.0.0.2")
    other.sendall(b"GET /blobs/" + b"ab" * 32 + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")

    assert _read_answer(refused).startswith(b"HTTP/1.1 503 ")
    assert _read_answer(other).startswith(b"HTTP/1.1 404 ")  # served: the blob just is not there
    for sock in held + [refused, other]:
        sock.close()


def test_at_the_total_cap_a_newcomer_evicts_the_oldest_idle_connection(ledger_chain, tmp_path: Path) -> None:
    patient = dataclasses.replace(FAST, header_timeout=60.0)  # nobody is cut by the deadline here
    with _serving(ledger_chain, tmp_path / "blobs", patient) as service:
        sources = [f"127.0.3.{i // patient.max_per_client + 1}" for i in range(patient.max_connections)]
        held = [service.connect(source) for source in sources]
        poll_until(lambda: service.server.guard.open == len(held), timeout=5, what="every connection to count")
        newcomer = service.connect("127.0.0.9")
        newcomer.sendall(b"HEAD /blobs/" + b"cd" * 32 + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")

        assert _read_answer(newcomer).startswith(b"HTTP/1.1 404 ")
        assert _read_answer(held[0]).startswith(b"HTTP/1.1 408 ")
        assert service.server.guard.evicted == 1
        for sock in held + [newcomer]:
            sock.close()


# ---------------------------------------------------------------- quota


def test_a_node_stores_at_most_its_quota_per_round(service: Service) -> None:
    chain, node = service.chain, service.chain.nodes[2]
    uploader = service.store(node.account)
    genesis = service.store(chain.admin.account).put(b"genesis")  # aggregators have no byte quota
    chain.admin.commit_genesis(genesis, genesis)
    chain.admin.open_round(1, genesis, chain.now() + 600, 1)
    first, second, third = (os.urandom(QUOTA // 2) for _ in range(3))

    uploader.put(first)
    uploader.put(second)
    uploader.put(second)  # a repeat stores nothing new, so it costs no quota
    with pytest.raises(QuotaExceeded) as exceeded:
        uploader.put(third)
    service.store(chain.nodes[3].account).put(third)  # other nodes have their own quota

    assert exceeded.value.quota == QUOTA
    assert "round 1" in exceeded.value.reason
    chain.advance_time(601)
    chain.admin.abandon_round(1, 1)
    chain.admin.open_round(2, genesis, chain.now() + 600, 1)
    uploader.put(third)  # a new round, a new quota
    assert service.blobs.get(sha256_hex(third)) == third


def test_a_port_outside_0_to_65535_is_refused_rather_than_wrapped() -> None:
    from ledger.api.server import listen

    with pytest.raises(ValueError, match="0..65535"):
        listen("127.0.0.1", 65536 + 4464)  # getaddrinfo alone would bind port 4464


@pytest.mark.parametrize("option", [["--node-quota-mb", "nan"], ["--node-quota-mb", "inf"], ["--gc-interval-minutes", "nan"]])
def test_api_serve_refuses_a_quota_or_interval_that_is_not_a_number(option: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from ledger.cli.main import main

    assert main(["api", "serve", "--port", "0", *option]) == 2  # refused before the chain is asked
    assert option[0] in capsys.readouterr().err
