"""A folder where nodes leave signed submissions for any relayer to post in batches.

A node that wants its submission relayed writes its 104-byte signed record (see
`ledger.chain.client.sign_submission`) to `<folder>/round-<n>/<node address>.rec`; a relayer
reads the round's records and posts them many per transaction. A folder rather than a service
endpoint: the records are signed for one round, chain and contract, so the channel needs no
authentication and no trust (a forged or altered record recovers another signer and is dropped
by the relayer's own check), and any shared folder or object store can carry it. A relayer can
still withhold a record: the node checks the chain and submits directly before the deadline.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

RECORD_BYTES = 104


class RelayFolder:
    """Signed submission records by round and node; writes are atomic (temp file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def hand_over(self, round_number: int, node: str, record: bytes) -> Path:
        if len(record) != RECORD_BYTES:
            raise ValueError(f"a signed submission record is {RECORD_BYTES} bytes, got {len(record)}")
        folder = self.root / f"round-{round_number}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{node}.rec"
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(record)
        os.replace(temporary, path)
        return path

    def pending(self, round_number: int) -> dict[str, bytes]:
        """Node address (as the file names it) → record, for every well-sized record of the round."""
        folder = self.root / f"round-{round_number}"
        if not folder.is_dir():
            return {}
        found = {}
        for path in sorted(folder.glob("*.rec")):
            data = path.read_bytes()
            if len(data) == RECORD_BYTES:
                found[path.stem] = data
        return found
