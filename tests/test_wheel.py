"""fedledger installed as a user installs it: a wheel in a fresh virtualenv, used from another folder.

The wheel is built from this checkout and installed (with `--no-deps`) into a new virtualenv
outside the repository; its third-party dependencies come from this test run's environment
through a `.pth` line, so no GBs are downloaded. Then, from an unrelated working directory, the
commands a new user runs first must work, state must land in that directory's `var/`, and the
README's pytest-plugin example must pass as printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
from support import ROOT, fresh_virtualenv

TIMEOUT = 300


@pytest.fixture(scope="module")
def wheel(fedledger_wheel: Path) -> Path:
    return fedledger_wheel


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the wheel; returns its bin/ folder."""
    return fresh_virtualenv(tmp_path_factory.mktemp("venv"), wheel)


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    folder = tmp_path / "somewhere-else"
    folder.mkdir()
    return folder


def _run(bin_dir: Path, folder: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEDGER_") and k != "PYTHONPATH"}
    environment.update(PATH=f"{bin_dir}:/usr/bin:/bin", **env)
    return subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=TIMEOUT)


def test_the_wheel_carries_the_contract_artifact_and_migrations_byte_for_byte(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.read("ledger/chain/FederatedLedger.json") == (ROOT / "ledger/chain/FederatedLedger.json").read_bytes()
        sources = [p for p in (ROOT / "migrations").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        for source in sources:
            packaged = "ledger/index/migrations/" + source.relative_to(ROOT / "migrations").as_posix()
            assert packaged in names, f"{packaged} is missing from the wheel"
            assert archive.read(packaged) == source.read_bytes()
        assert {"ledger/py.typed", "ledger/api/static/index.html"} <= names
        assert not any(name.startswith(("tests/", "contracts/", "var/")) for name in names)


def test_first_commands_work_from_another_folder(installed: Path, elsewhere: Path) -> None:
    fedledger = str(installed / "fedledger")

    help_text = _run(installed, elsewhere, fedledger, "--help")
    assert help_text.returncode == 0 and "devnet" in help_text.stdout, help_text.stderr

    # Recompiling needs a compiler: a user points FEDLEDGER_SOLC at theirs (here, the checkout's solc-js).
    check = _run(installed, elsewhere, fedledger, "contracts", "check", FEDLEDGER_SOLC=str(ROOT / "hardhat-free-devnet/solc"))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "matches a fresh compile of its embedded source" in check.stdout

    upgrade = _run(installed, elsewhere, fedledger, "db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert (elsewhere / "var" / "index.sqlite").is_file()

    demo = _run(installed, elsewhere, fedledger, "demo", "--chain", "memory", "--rounds", "1", "--nodes", "3")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert re.search(r"test accuracy \d\.\d+", demo.stdout)

    where = _run(installed, elsewhere, str(installed / "python"), "-c", "import ledger, edge_node.node; print(ledger.__file__)")
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(installed.parent)), "fedledger must come from the wheel"
    site = installed.parent / "lib"
    assert not list(site.rglob("var")), "no runtime state inside site-packages"


def test_the_readme_plugin_example_runs_as_printed(installed: Path, elsewhere: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### In your own tests") :]
    example = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert example is not None, "README's plugin example is missing"
    (elsewhere / "test_my_round.py").write_text(example.group(1), encoding="utf-8")

    result = _run(installed, elsewhere, str(installed / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_round.py")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
