"""The `fedledger` entry point: lazy imports, and one-line errors whichever way it is started."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.cli.bench.cli import HEAVY, measure
from ledger.core.polling import free_port

FEDLEDGER = Path(sys.executable).with_name("fedledger")


@pytest.mark.parametrize("command", [["--help"], ["devnet", "status", "--port", "1"]])
def test_common_commands_import_no_heavy_library(command: list[str]) -> None:
    found = measure(command, runs=1)
    assert found["heavy_modules_imported"] == [], f"{command} imported {found['heavy_modules_imported']} of {HEAVY}"


def test_a_failing_command_prints_one_line_the_same_way_from_the_script_and_python_m(tmp_path: Path) -> None:
    assert shutil.which(str(FEDLEDGER)), "the fedledger script is installed beside this interpreter"
    unreachable = ["deploy", "--rpc-url", f"http://127.0.0.1:{free_port()}"]
    outcomes = []
    for launcher in ([str(FEDLEDGER)], [sys.executable, "-m", "ledger.cli"]):
        done = subprocess.run([*launcher, *unreachable], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        outcomes.append((done.returncode, done.stderr))
    (script_code, script_err), (module_code, module_err) = outcomes
    assert script_code == module_code != 0
    for err in (script_err, module_err):
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fedledger: error: "), err
    assert script_err == module_err


def test_an_unknown_command_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "ledger.cli", "fly"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "invalid choice: 'fly'" in done.stderr


def test_the_node_command_offers_every_attack_of_the_demo_attackers() -> None:
    from edge_node.misbehaviour import ATTACKS
    from ledger.cli.node import ATTACKS as OFFERED

    assert OFFERED == ATTACKS  # the light CLI module keeps its own copy: they must not drift


@pytest.mark.parametrize(
    ("option", "named"),
    [(["--max-norm", "-1"], "max_norm"), (["--max-norm", "nan"], "max_norm"), (["--max-num-samples", "-1"], "max_num_samples"),
     (["--max-update-mb", "0"], "--max-update-mb"), (["--max-update-mb", "nan"], "--max-update-mb")],
)  # fmt: skip
def test_a_bad_aggregator_limit_is_a_usage_error_before_the_chain_is_asked(option: list[str], named: str, tmp_path: Path) -> None:
    unreachable = ["--rpc-url", f"http://127.0.0.1:{free_port()}", "--dev-key", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "aggregator", "run", *unreachable, *option],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and named in done.stderr


@pytest.mark.parametrize(
    "option",
    [["--non-iid", "--alpha", "-1"], ["--non-iid", "--alpha", "nan"], ["--alpha", "inf"], ["--round-seconds", "0"]],
)
def test_an_odd_demo_option_is_a_usage_error(option: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "demo", "--chain", "memory", "--rounds", "1", *option],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and option[-2] in done.stderr


@pytest.mark.parametrize(
    ("url", "code"),
    [("notaurl", 2), ("nosuch://x/y", 2), ("postgresql://u:secret@127.0.0.1:{port}/x", 3)],
)
def test_a_bad_or_unreachable_database_url_is_one_line_and_keeps_the_password(url: str, code: int, tmp_path: Path) -> None:
    url = url.format(port=free_port())  # chosen here, not at collection: every xdist worker must collect the same ids
    done = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "db", "upgrade", "--database-url", url],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedledger: error: the index database"), done.stderr
    assert "secret" not in done.stderr


@pytest.mark.parametrize(
    "command",
    [["round", "status", "-1"], ["round", "abandon", "-1", "--dev-key", "0"], ["deploy", "--attestation-quorum", "-1"], ["deploy", "--attestation-quorum", "256"]],
)  # fmt: skip
def test_a_negative_round_or_an_out_of_range_quorum_is_a_usage_error(command: list[str], tmp_path: Path) -> None:
    unreachable = ["--rpc-url", f"http://127.0.0.1:{free_port()}"]
    done = subprocess.run(
        [sys.executable, "-m", "ledger.cli", *command, *unreachable], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and ("must be 0 or more" in done.stderr or "must be 0..32" in done.stderr)


def test_a_blobs_dir_that_is_a_file_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from ledger.cli.errors import UsageError
    from ledger.cli.wiring import blob_store

    monkeypatch.delenv("FEDLEDGER_STORE_URL", raising=False)
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(UsageError, match="is not a folder"):  # the local store never asks the client
        blob_store(argparse.Namespace(blobs_dir=tmp_path / "afile"), client=None)  # type: ignore[arg-type]
