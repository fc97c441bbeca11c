"""Small helpers the test modules import by name (conftest modules cannot be imported reliably)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT = 300
MAX_BYTES = 1 << 20  # the digits MLP is ~19 KB: room for honest updates, not for a 2 MB one

from ledger.core.hashing import sha256_hex
from ledger.store.base import BlobNotFound


def h(label: str) -> str:
    """A placeholder SHA-256 (hex) for contract tests that need distinct hashes."""
    return hashlib.sha256(label.encode()).hexdigest()


def build_wheel(out: Path) -> Path:
    """fedledger's wheel, built from this checkout into `out` (no dependencies, no download)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
        timeout=INSTALL_TIMEOUT,
        capture_output=True,
    )
    (built,) = out.glob("fedledger-*.whl")
    return built


def fresh_virtualenv(where: Path, wheel: Path) -> Path:
    """A new virtualenv at `where` holding `wheel`; returns its bin/ folder.

    Its third-party dependencies (torch, web3, pip, setuptools, pytest...) come from this test
    run's environment through a `.pth` line, so nothing is downloaded; fedledger itself only from
    the wheel. `bin/pip` launches that pip for the new interpreter, as a virtualenv's own would.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=INSTALL_TIMEOUT)
    python = where / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
        ).stdout.strip()
    )  # fmt: skip
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    pip = where / "bin" / "pip"
    pip.write_text(f"#!{python}\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n")
    pip.chmod(0o755)
    subprocess.run(
        # --ignore-installed: the .pth also shows this checkout's editable fedledger; install over it.
        [str(pip), "install", "--no-deps", "--ignore-installed", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True, timeout=INSTALL_TIMEOUT, capture_output=True,
    )  # fmt: skip
    return where / "bin"


class DictStore:
    """An in-memory BlobStore (the protocol's four methods), for judging crafted records."""

    def __init__(self, blobs: dict[str, bytes] | None = None) -> None:
        self.blobs = dict(blobs or {})

    def put(self, data: bytes) -> str:
        self.blobs[sha256_hex(data)] = data
        return sha256_hex(data)

    def put_as(self, name: str, data: bytes) -> None:
        self.blobs[name] = data

    def get(self, name: str) -> bytes:
        if name not in self.blobs:
            raise BlobNotFound(name)
        return self.blobs[name]

    def exists(self, name: str) -> bool:
        return name in self.blobs
