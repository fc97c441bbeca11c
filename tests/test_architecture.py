"""The import rules in pyproject.toml hold, and breaking one makes `lint-imports` fail.

The negative cases copy the packages to a temp folder, add one forbidden import, and run the real
import-linter over the copy with the project's own configuration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    copy = tmp_path / "tree"
    for package in ("ledger", "aggregator", "edge_node"):
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def test_the_tree_keeps_every_import_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("ledger/core/hashing.py", "import requests", "The core is pure"),
        ("ledger/core/merkle.py", "from ledger.chain import client", "Rooms are layered"),
        ("ledger/core/encoding.py", "from opacus.accountants.analysis import rdp", "The core is pure"),
        ("aggregator/merge.py", "from edge_node import training", "never import each other"),
        ("edge_node/training.py", "from ledger.cli import errors", "Rooms are layered"),
        ("ledger/chain/client.py", "import ledger.testing", "never imports pytest"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tree: Path, module: str, line: str, contract: str) -> None:
    path = tree / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # added by the test\n", encoding="utf-8")

    result = _lint(tree)

    assert result.returncode == 1, result.stdout + result.stderr
    summary = result.stdout.split("Contracts:")[0]  # the per-contract lines (a long name may wrap)
    verdict = summary[summary.index(contract) :]
    assert verdict.index("BROKEN") < (verdict.index("KEPT") if "KEPT" in verdict else len(verdict)), result.stdout
