"""The load benchmark's attacker: idle and slow connections held open against a server on 127.0.0.1.

Run by `fedledger bench load` as its own process (`python -m ledger.cli.bench.flood ...`), so its
work never shares a GIL with the server or with the measuring client. Every connection comes from
one of `--sources` loopback addresses (127.0.1.2, 127.0.1.3, …), as a crowd of clients would, and
is reopened 0.2–0.4 s after the server cuts it, so the crowd stays as large as the server lets it:

- idle: connect and send nothing;
- slow headers: a request line, then one header byte every 2 s;
- slow unsigned bodies: `PUT /blobs/<random>` declaring 10 MiB, no signature, one byte every 2 s;
- slow signed bodies (with `--dev-key`, an account holding a role): the same, correctly signed.

It targets loopback only and stops by itself after `--seconds`. It prints `READY <open>` once
every connection has been opened once, and a JSON line of counts when it stops (SIGTERM stops it
early, and cleanly).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time

DRIP_SECONDS = 2.0
DECLARED_BODY = 10 * 1024 * 1024


def _signature(dev_key: int | None, name: str, chain_id: int, contract: str) -> str | None:
    if dev_key is None:
        return None
    from ledger.chain.devkeys import dev_account
    from ledger.store.protocol import sign_upload

    return sign_upload(dev_account(dev_key), name, chain_id, contract)


class Flood:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.open = 0
        self.opened = 0
        self.cut = 0
        self.refused = 0
        self.stop_at = time.monotonic() + args.seconds
        self.rng = random.Random(0)

    def source(self, index: int) -> str:
        return f"127.0.1.{2 + index % self.args.sources}"

    async def hold(self, index: int, kind: str, ready: asyncio.Event) -> None:
        """Keep one connection of `kind` open until the flood stops, reopening it whenever it is cut."""
        first = True
        while time.monotonic() < self.stop_at:
            try:
                reader, writer = await asyncio.open_connection(
                    self.args.host, self.args.port, local_addr=(self.source(index), 0)
                )
            except OSError:
                self.refused += 1
                await asyncio.sleep(0.3)
                continue
            self.opened += 1
            self.open += 1
            if first:
                first = False
                ready.set()
            try:
                await self._misbehave(kind, reader, writer)
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                self.open -= 1
                self.cut += 1
                writer.close()
            await asyncio.sleep(0.2 + 0.2 * self.rng.random())

    async def _misbehave(self, kind: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if kind == "slow_header":
            writer.write(b"GET /api/v1/summary HTTP/1.1\r\nHost: flood\r\n")
        elif kind in ("unsigned_body", "signed_body"):
            name = os.urandom(32).hex()
            head = f"PUT /blobs/{name} HTTP/1.1\r\nHost: flood\r\nContent-Length: {DECLARED_BODY}\r\n"
            signature = _signature(self.args.dev_key, name, self.args.chain_id, self.args.contract) if kind == "signed_body" else None
            if signature:
                head += f"X-Fedledger-Signature: {signature}\r\n"
            writer.write((head + "\r\n").encode())
        await writer.drain()
        while time.monotonic() < self.stop_at:
            try:
                data = await asyncio.wait_for(reader.read(4096), timeout=DRIP_SECONDS)
            except asyncio.TimeoutError:
                data = None
            if data == b"":  # the server closed the connection
                return
            if kind != "idle":
                writer.write(b"X")
                await writer.drain()

    def finish(self) -> None:
        """Stop: every connection winds down within one drip interval (SIGTERM does this)."""
        self.stop_at = 0.0

    async def run(self) -> dict[str, int]:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.finish)
        args = self.args
        kinds = ["idle"] * args.idle
        slow = args.slow
        signed = min(args.signed, slow) if args.dev_key is not None else 0
        kinds += ["signed_body"] * signed
        kinds += ["unsigned_body"] * ((slow - signed) * 4 // 10)
        kinds += ["slow_header"] * (slow - signed - (slow - signed) * 4 // 10)
        readies = [asyncio.Event() for _ in kinds]
        tasks = [asyncio.create_task(self.hold(index, kind, readies[index])) for index, kind in enumerate(kinds)]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in readies)), timeout=args.seconds)
        print(f"READY {self.open}", flush=True)
        samples = []
        while time.monotonic() < self.stop_at:
            await asyncio.sleep(0.5)
            samples.append(self.open)
        await asyncio.gather(*tasks, return_exceptions=True)
        return {
            "connections": len(kinds),
            "opened": self.opened,
            "cut_by_server": self.cut,
            "refused": self.refused,
            "held_mean": round(sum(samples) / len(samples)) if samples else 0,
            "held_min": min(samples) if samples else 0,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ledger.cli.bench.flood", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--slow", type=int, default=100)
    parser.add_argument("--signed", type=int, default=10, help="how many of the slow clients sign (needs --dev-key)")
    parser.add_argument("--dev-key", type=int, default=None, help="anvil dev account whose role the signed ones use")
    parser.add_argument("--chain-id", type=int, default=31337)
    parser.add_argument("--contract", default="0x" + "00" * 20)
    parser.add_argument("--sources", type=int, default=60, help="loopback source addresses (127.0.1.2 onwards)")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop after this long, whatever happens")
    args = parser.parse_args(argv)
    if not args.host.startswith("127.") or not 1 <= args.sources <= 250:
        parser.error("the flood targets loopback only (127.0.0.0/8), from 1 to 250 source addresses")
    stats = asyncio.run(Flood(args).run())
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
