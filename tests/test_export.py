"""`fedledger export` and `export verify` on a real federation's history, on a real anvil.

One module-scoped history (genesis, two rounds, two watchers' attestations of version 2: one ok, one
failing that the admin resolved) is committed
on a throwaway anvil by the real aggregator and edge nodes, with state in a temp FEDLEDGER_HOME.
The README's "Deploying a model" commands then run as printed (separate processes): key, export,
verify, the standard `model_signing` CLI, ONNX Runtime on the exported file. The tamper tests damage
copies of that signed folder and check each refusal names its reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aggregator.coordinator import Aggregator, AggregatorConfig
from edge_node.node import EdgeNode, TrainingConfig
from ledger.chain.client import LedgerClient
from ledger.chain.connect import connect
from ledger.chain.deploy import deploy
from ledger.chain.devkeys import dev_account
from ledger.chain.devnet import throwaway_devnet
from ledger.cli.main import main
from ledger.core.hashing import sha256_hex
from ledger.core.metadata import decode
from ledger.export.provenance import decode_statement
from ledger.export.signing import sign_folder
from ledger.store.local import LocalBlobStore
from ledger.tasks.digits import DIGITS_MLP
from ledger.tasks.partition import split_examples

pytestmark = pytest.mark.devnet

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MAX_BYTES = 16 * 1024 * 1024
NODES = 2
TIMEOUT = 300


@dataclass
class History:
    rpc_url: str
    reader: LedgerClient
    home: Path  # FEDLEDGER_HOME: deployments/, blobs/
    workdir: Path  # where the README's commands run (their var/ is `home`)
    model_hashes: list[str]  # genesis, round 1, round 2
    auditor: str  # attested version 2 ok
    failing_auditor: str  # attested version 2 failed; the admin resolved it

    @property
    def blobs(self) -> Path:
        return self.home / "blobs"

    def chain_options(self) -> list[str]:
        return ["--rpc-url", self.rpc_url, "--contract", self.reader.address]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    workdir = tmp_path_factory.mktemp("deploying")
    home = workdir / "var"
    with throwaway_devnet() as devnet, pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEDLEDGER_HOME", str(home))
        w3 = connect(devnet.rpc_url)
        admin, _, _ = deploy(w3, dev_account(0))
        store = LocalBlobStore(home / "blobs", max_bytes=MAX_BYTES)
        split = DIGITS_MLP.bundled_data()
        shards = split_examples(split.train, NODES, iid=True, seed=0)
        hyper = {"epochs": 1}
        nodes = []
        for index, shard in enumerate(shards):
            client = admin.as_account(dev_account(index + 1))
            admin.register_node(client.account.address)  # type: ignore[union-attr]
            nodes.append(EdgeNode(client, store, shard, TrainingConfig(hyperparameters=hyper, seed=index), max_model_bytes=MAX_BYTES))
        aggregator = Aggregator(admin, store, split.test, AggregatorConfig(hyperparameters=hyper, min_updates=NODES))
        hashes = [aggregator.ensure_genesis()]
        for _ in range(2):
            info = aggregator.open_round()
            for node in nodes:
                node.participate(info.round)
            hashes.append(aggregator.close_round(info.round).model_hash)
        auditor = dev_account(NODES + 1)
        admin.set_auditor(auditor.address, True)
        admin.as_account(auditor).attest_version(hashes[-1], True, sha256_hex(b"audit report of version 2"))
        failing = dev_account(NODES + 2)
        admin.set_auditor(failing.address, True)
        admin.as_account(failing).attest_version(hashes[-1], False, sha256_hex(b"a failing report of version 2"))
        admin.resolve_attestation(hashes[-1], failing.address, sha256_hex(b"why the failure does not stand"))
        yield History(devnet.rpc_url, LedgerClient(w3, admin.address), home, workdir, hashes, auditor.address, failing.address)


def _readme_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Deploying a model")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else None]


@dataclass
class Deployed:
    folder: Path
    public_key: Path
    outputs: list[str]


@pytest.fixture(scope="module")
def deployed(history: History) -> Iterator[Deployed]:
    """The README's "Deploying a model" section, every command run as printed, in order, from the
    directory whose var/ holds the federation. fedledger's commands run in this process (the
    script's entry point is `main`; tests/test_cli.py covers the script itself); the standard
    model_signing tool and the ONNX Runtime example run as separate processes."""
    section = _readme_section()
    commands = [
        line.strip()
        for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert [c.split()[:3] for c in commands] == [
        [".venv/bin/fedledger", "keys", "new"],
        [".venv/bin/fedledger", "export", "latest"],
        [".venv/bin/fedledger", "export", "verify"],
        [".venv/bin/model_signing", "verify", "key"],
    ]
    (python,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    outputs = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEDLEDGER_HOME", str(history.home))
        patch.setenv("FEDLEDGER_RPC_URL", history.rpc_url)
        patch.chdir(history.workdir)
        for command in commands:
            program, *argv = command.split()
            if program == ".venv/bin/fedledger":
                printed = io.StringIO()
                with contextlib.redirect_stdout(printed):
                    code = main(argv)
                assert code == 0, f"{command}\n{printed.getvalue()}"
                outputs.append(printed.getvalue())
            else:
                done = subprocess.run([str(BIN / Path(program).name), *argv], capture_output=True, text=True, timeout=TIMEOUT)
                assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
                outputs.append(done.stdout + done.stderr)
        done = subprocess.run([sys.executable, "-c", python], capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    folder = history.workdir / re.search(r"--out (\S+)", commands[1]).group(1)
    yield Deployed(folder, history.workdir / "var/keys/signing.pub", outputs)


# --------------------------------------------------------------------------- the README, as printed


def test_the_readme_deploys_the_latest_version(history: History, deployed: Deployed) -> None:
    keys, export, verify, standard, onnxruntime_run = deployed.outputs
    private_key = history.workdir / "var/keys/signing.pem"
    assert stat.S_IMODE(private_key.stat().st_mode) == 0o600
    assert "key id" in keys and "BEGIN" not in keys + export  # the private key is never printed

    assert sorted(p.name for p in deployed.folder.iterdir()) == [
        "genesis.json", "metadata.json", "model.int8.onnx", "model.onnx", "model.safetensors", "model.sig", "provenance.json",
    ]  # fmt: skip
    latest = history.model_hashes[-1]
    assert sha256_hex((deployed.folder / "model.safetensors").read_bytes()) == latest  # `sha256sum` prints the chain's hash
    assert f"sha256 {latest}  = the model hash on chain" in export
    parity = re.search(r"parity holds on 359 held-out examples: max \|Δlogit\| (\S+) \(≤ 1e-05\), identical predictions", export)
    assert parity and float(parity.group(1)) <= 1e-5
    assert re.search(r"int8 held-out accuracy 0\.\d+ \(float 0\.\d+\)", export)

    assert verify.splitlines()[-1].startswith(f"VERIFIED  {deployed.folder.relative_to(history.workdir)}: version 2")
    for name in ("signature", "files", "weights", "onnx metadata", "chain", "attestations", "metadata", "parity"):
        assert re.search(rf"^ok\s+{name}\s", verify, re.MULTILINE), f"{name} not checked:\n{verify}"
    assert "Verification succeeded" in standard
    predicted, labels = onnxruntime_run.strip().splitlines()[-2:]
    assert predicted.startswith("predicted") and labels.startswith("labels")


def test_the_statement_holds_the_chain_facts_and_the_attestation(history: History, deployed: Deployed) -> None:
    statement = decode_statement((deployed.folder / "provenance.json").read_bytes())
    predicate = statement.predicate
    record = json.loads((deployed.folder / "provenance.json").read_text())

    assert record["_type"] == "https://in-toto.io/Statement/v1"
    assert set(statement.subjects) == {"genesis.json", "metadata.json", "model.int8.onnx", "model.onnx", "model.safetensors"}
    assert predicate["ledger"] == {"chainId": 31337, "contract": history.reader.address}
    assert predicate["model"] == {
        "hash": history.model_hashes[2], "version": 2, "round": 2, "parentHash": history.model_hashes[1],
    }  # fmt: skip
    assert predicate["round"]["includedCount"] == NODES
    assert predicate["aggregation"] == {"rule": "arc_nnm_trimmed_mean", "params": {"byzantine_fraction": 0.4}}
    pinned = decode((deployed.folder / "genesis.json").read_bytes()).task
    assert predicate["task"] == {"name": "digits-mlp", "version": pinned.version, "specHash": pinned.spec_hash, "seed": 0}
    # Both watchers' verdicts, each with the contract's `attestationOf` resolution, and its counts.
    ok, failed = predicate["attestations"]
    assert (ok["auditor"], ok["ok"], ok["resolved"]) == (history.auditor, True, False)
    assert (failed["auditor"], failed["ok"], failed["resolved"]) == (history.failing_auditor, False, True)
    assert predicate["attestationGate"] == {
        "quorum": 0, "okCount": 1, "currentOkCount": 1, "failedCount": 1, "unresolvedCount": 0,
    }  # fmt: skip
    assert predicate["export"]["signed"] is True
    assert predicate["export"]["onnx"]["toolchain"]["onnxruntime"] == "1.32.0"
    # The standard in-toto bindings (a model-signing dependency) accept the statement's shape.
    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    Statement.copy_from_pb(json_format.ParseDict(record, statement_pb2.Statement())).validate()


# --------------------------------------------------------------------------- refusals, each named


def _copy(deployed: Deployed, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(deployed.folder, copy)
    return copy


def test_a_flipped_byte_in_the_onnx_file_is_refused_naming_it(history, deployed, tmp_path, capsys) -> None:
    folder = _copy(deployed, tmp_path)
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "model.onnx").write_bytes(bytes(data))

    code = main(["export", "verify", str(folder), "--public-key", str(deployed.public_key), *history.chain_options()])

    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"^FAILED\s+signature\s+model\.onnx: signed with sha256 [0-9a-f]{64}, the file has [0-9a-f]{64}$", out, re.MULTILINE), out
    assert re.search(r"^FAILED\s+files\s+model\.onnx: provenance\.json says sha256", out, re.MULTILINE), out
    assert out.splitlines()[-1].startswith(f"NOT VERIFIED  {folder}")
    standard = subprocess.run(
        [str(BIN / "model_signing"), "verify", "key", str(folder), "--signature", str(folder / "model.sig"),
         "--public_key", str(deployed.public_key)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    said = standard.stdout + standard.stderr
    assert standard.returncode == 1 and "Signature mismatch" in said and "Hash mismatch for" in said and "model.onnx" in said


def _verify_signed_lie(
    history: History, deployed: Deployed, tmp_path: Path, capsys: Any, lie: Callable[[dict[str, Any]], None]
) -> tuple[int, str]:
    """`export verify` (exit code, output) on a copy whose statement `lie` changed, re-signed with the exporter's key."""
    folder = _copy(deployed, tmp_path)
    statement = json.loads((folder / "provenance.json").read_text())
    lie(statement["predicate"])
    (folder / "provenance.json").write_text(json.dumps(statement, sort_keys=True, separators=(",", ":")) + "\n")
    (folder / "model.sig").unlink()
    sign_folder(folder, history.workdir / "var/keys/signing.pem")
    code = main(["export", "verify", str(folder), "--public-key", str(deployed.public_key), *history.chain_options()])
    return code, capsys.readouterr().out


def test_a_statement_naming_a_wrong_round_is_refused_by_the_chain_even_when_signed(
    history, deployed, tmp_path, capsys
) -> None:
    """The exporter's own key signs a lie: the signature holds, the chain check names the round."""
    code, out = _verify_signed_lie(history, deployed, tmp_path, capsys, lambda p: p["model"].update(round=7))
    assert code == 1
    assert re.search(r"^ok\s+signature\s", out, re.MULTILINE), out
    assert re.search(r"^FAILED\s+chain\s+model\.round: provenance\.json says 7, the chain says 2$", out, re.MULTILINE), out
    assert "model.onnx metadata fedledger.round: the file says '2', provenance.json says '7'" in out


def test_attestations_and_counts_the_chain_does_not_hold_are_refused_even_when_signed(
    history, deployed, tmp_path, capsys
) -> None:
    """A signed statement that claims a resolution the chain lacks and more ok verdicts than it counts."""

    def lie(predicate: dict[str, Any]) -> None:
        predicate["attestations"][0]["resolved"] = True
        predicate["attestationGate"]["okCount"] = 3

    code, out = _verify_signed_lie(history, deployed, tmp_path, capsys, lie)
    assert code == 1
    assert re.search(r"^ok\s+chain\s", out, re.MULTILINE), out
    failed = re.search(r"^FAILED\s+attestations\s+(.*)$", out, re.MULTILINE)
    assert failed is not None, out
    assert f"{history.auditor}'s attestation is listed as resolved, the chain has no resolution" in failed.group(1)
    assert "attestationGate.okCount: provenance.json says 3, the chain counts 1" in failed.group(1)


def test_a_model_hash_that_is_not_on_chain_is_refused(history, deployed, tmp_path, capsys) -> None:
    unknown = sha256_hex(b"never committed")
    code = main(["export", unknown, "--out", str(tmp_path / "out"), "--unsigned", "--blobs-dir", str(history.blobs), *history.chain_options()])
    assert code == 1
    assert f"{unknown} is not a committed model version on ledger {history.reader.address}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

    # The same folder checked against another ledger, where its model was never committed.
    other, _, _ = deploy(connect(history.rpc_url), dev_account(0))
    code = main(["export", "verify", str(deployed.folder), "--public-key", str(deployed.public_key),
                 "--rpc", history.rpc_url, "--contract", other.address])  # the spelling: --rpc-url abbreviated
    out = capsys.readouterr().out
    assert code == 1
    assert f"model {history.model_hashes[2]} is not a committed version on ledger {other.address} (chain 31337)" in out
    assert re.search(r"^ok\s+signature\s", out, re.MULTILINE)


def test_a_wrong_public_key_and_an_extra_file_are_refused(history, deployed, tmp_path, capsys) -> None:
    from ledger.export.signing import new_signing_key

    stranger = new_signing_key(tmp_path / "keys" / "stranger.pem")
    code = main(["export", "verify", str(deployed.folder), "--public-key", str(stranger.public_key), *history.chain_options()])
    out = capsys.readouterr().out
    assert code == 1 and f"not by the given public key {stranger.key_id}" in out

    folder = _copy(deployed, tmp_path)
    (folder / "README.txt").write_text("not part of the export\n")
    code = main(["export", "verify", str(folder), "--public-key", str(deployed.public_key), *history.chain_options()])
    out = capsys.readouterr().out
    assert code == 1 and "README.txt: present but not signed" in out and "README.txt: present but not listed" in out


def test_export_refuses_a_non_empty_folder_and_a_readable_key(history, deployed, tmp_path, capsys) -> None:
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "stray.txt").write_text("would be signed too")
    key = history.workdir / "var/keys/signing.pem"
    common = ["--blobs-dir", str(history.blobs), *history.chain_options()]

    assert main(["export", "latest", "--out", str(occupied), "--signing-key", str(key), *common]) == 1
    assert "is not an empty folder" in capsys.readouterr().err

    readable = tmp_path / "readable.pem"
    shutil.copy(key, readable)
    shutil.copy(key.with_suffix(".pub"), readable.with_suffix(".pub"))
    readable.chmod(0o644)
    assert main(["export", "latest", "--out", str(tmp_path / "new"), "--signing-key", str(readable), *common]) == 1
    assert "is readable by others (mode 0644)" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_genesis_exports_as_safetensors_alone_and_verifies(history, tmp_path, capsys) -> None:
    genesis = history.model_hashes[0]
    folder = tmp_path / "genesis"
    common = history.chain_options()

    assert main(["export", "0x" + genesis, "--out", str(folder), "--format", "safetensors", "--unsigned",
                 "--blobs-dir", str(history.blobs), *common]) == 0  # fmt: skip
    assert "exported version 0 (round 0)" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == ["genesis.json", "metadata.json", "model.safetensors", "provenance.json"]

    assert main(["export", "verify", str(folder), "--unsigned", *common]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ok\s+metadata\s+.*; genesis \(no rule\)$", out, re.MULTILINE), out
    assert re.search(r"^ok\s+chain\s+version 0 \(round 0\)", out, re.MULTILINE), out


# --------------------------------------------------------------------------- the API's download


def test_the_api_download_is_unsigned_says_so_and_verifies_against_the_chain(history, deployed, tmp_path, capsys) -> None:
    import requests

    from ledger.api.app import create_app
    from ledger.api.server import serve_in_thread

    app = create_app(store=LocalBlobStore(history.blobs, max_bytes=MAX_BYTES), ledger=history.reader, max_blob_bytes=MAX_BYTES)
    latest = history.model_hashes[2]

    with serve_in_thread(app, threads=2) as server:  # the real server: uvicorn + a2wsgi behind the guard
        response = requests.get(f"{server.url}/api/v1/models/0x{latest.upper()}/export?format=onnx", timeout=120)
        missing = requests.get(f"{server.url}/api/v1/models/{sha256_hex(b'nope')}/export", timeout=30)
        bad_format = requests.get(f"{server.url}/api/v1/models/{latest}/export?format=zip", timeout=30)

    assert response.status_code == 200, response.text
    assert response.headers["X-Fedledger-Signed"] == "false"
    assert response.headers["Content-Type"] == "application/x-tar"
    assert (missing.status_code, bad_format.status_code) == (404, 400)
    with tarfile.open(fileobj=io.BytesIO(response.content)) as archive:
        archive.extractall(tmp_path, filter="data")
    (folder,) = tmp_path.iterdir()
    assert folder.name == f"fedledger-v2-{latest[:12]}"
    assert sorted(p.name for p in folder.iterdir()) == ["genesis.json", "metadata.json", "model.onnx", "provenance.json"]
    assert json.loads((folder / "provenance.json").read_text())["predicate"]["export"]["signed"] is False
    # Same weights, same toolchain: the same ONNX bytes as the README's export in another process.
    assert (folder / "model.onnx").read_bytes() == (deployed.folder / "model.onnx").read_bytes()

    assert main(["export", "verify", str(folder), "--unsigned", *history.chain_options()]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ok\s+signature\s+not checked \(--unsigned\)", out, re.MULTILINE)
    assert re.search(r"^ok\s+weights\s+model\.onnx's initializers hash to " + latest, out, re.MULTILINE)
    assert main(["export", "verify", str(folder), "--public-key", str(deployed.public_key), *history.chain_options()]) == 1
    assert "model.sig is missing: the folder is not signed" in capsys.readouterr().out
