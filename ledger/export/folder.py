"""An export folder: written from a committed version, and verified against the chain.

    DIR/model.safetensors  the committed bytes: sha256 is the model hash on chain   (--format safetensors|both)
    DIR/model.onnx         ONNX whose initializers are the committed tensors, bit for bit,
                           with fedledger.* metadata properties                       (--format onnx|both)
    DIR/model.int8.onnx    ONNX Runtime's dynamic int8 quantization of model.onnx    (--int8)
    DIR/metadata.json      the version's metadata blob (its sha256 is on chain): rule, parameters, updates
    DIR/genesis.json       the genesis metadata blob (its sha256 is on chain): the pinned model and policy
    DIR/provenance.json    the in-toto statement (`ledger.export.provenance`)
    DIR/model.sig          model-signing's bundle over every file above (absent when unsigned)

The folder is built beside DIR and renamed into place when complete, so an interrupted export
leaves nothing that looks finished. Verification never raises on bad content: every problem is a
failed `Check` naming what differs.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version as distribution_version
from pathlib import Path
from typing import Any

from ledger.chain.client import LedgerClient
from ledger.core.errors import LedgerError
from ledger.core.hashing import sha256_hex
from ledger.core.metadata import MetadataError, decode_genesis
from ledger.core.serialization import MalformedBlob, deserialize_tensors, serialize_tensors
from ledger.core.task import Task
from ledger.export import onnx_model
from ledger.export.committed import ModelUnavailable, committed_module, held_out, weight_names
from ledger.export.facts import VersionNotFound, read_chain_record, recipe_of
from ledger.export.provenance import (
    CHAIN_SECTIONS,
    PROVENANCE_NAME,
    RECIPE_SECTIONS,
    ChainRecord,
    ProvenanceError,
    Statement,
    build_statement,
    decode_statement,
    differences,
    encode_statement,
)
from ledger.export.signing import (
    SIGNATURE_NAME,
    SignatureError,
    SigningKeyError,
    check_signing_key,
    sign_folder,
    verify_folder,
)
from ledger.store.base import BlobStore, BlobStoreError

SAFETENSORS_NAME = "model.safetensors"
ONNX_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"
METADATA_NAME = "metadata.json"
GENESIS_NAME = "genesis.json"
FORMATS = ("both", "onnx", "safetensors")


class ExportError(LedgerError):
    """The export cannot be written as asked; nothing is left at the destination."""


@dataclass(frozen=True)
class ExportSources:
    """A committed version's chain record and its blobs, each re-hashed against the chain."""

    record: ChainRecord
    model: bytes
    metadata: bytes
    genesis: bytes


def gather(client: LedgerClient, store: BlobStore, model_hash: str, *, max_bytes: int) -> ExportSources:
    """Read the chain's record of `model_hash`, then fetch and re-hash the blobs it names."""
    record = read_chain_record(client, model_hash)
    if record is None:
        raise VersionNotFound(f"{model_hash} is not a committed model version on ledger {client.address} (chain {client.chain_id})")
    if record.metadata_hash is None or record.genesis_metadata_hash is None:
        raise ExportError(f"the chain records no metadata hash for version {record.version} or for genesis")

    def fetch(blob_hash: str, role: str) -> bytes:
        try:
            data = store.get(blob_hash)
        except BlobStoreError as exc:
            raise ExportError(f"cannot fetch the {role} blob {blob_hash}: {exc}") from None
        if len(data) > max_bytes or sha256_hex(data) != blob_hash:
            raise ExportError(f"the store served {role} bytes that do not hash to {blob_hash}: refusing them")
        return data

    return ExportSources(
        record=record,
        model=fetch(record.model_hash, "model"),
        metadata=fetch(record.metadata_hash, "metadata"),
        genesis=fetch(record.genesis_metadata_hash, "genesis metadata"),
    )


@dataclass(frozen=True)
class ExportOptions:
    formats: str = "both"
    int8: bool = False
    signing_key: Path | None = None  # None: unsigned, and the statement says so
    task: Task | None = None  # the pinned task, when it is not installed under its name
    test_data: Path | None = None  # held-out examples, when the task bundles none


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    files: Mapping[str, int]  # name → size in bytes, model.sig included
    statement: Mapping[str, Any]
    parity: onnx_model.Parity | None
    int8_accuracy: float | None
    key_id: str | None


def write_export(out: Path, sources: ExportSources, options: ExportOptions, *, max_bytes: int) -> ExportResult:
    """Write (and sign, given a key) the export folder `out`, which must not exist or be empty."""
    if options.formats not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, not {options.formats!r}")
    if options.int8 and options.formats == "safetensors":
        raise ExportError("--int8 quantizes the ONNX file: use --format onnx or both")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty folder: every file in the folder gets signed, so export into a new one")
    public_key = check_signing_key(options.signing_key) if options.signing_key is not None else None
    record = sources.record
    if sha256_hex(sources.model) != record.model_hash:
        raise ExportError(f"the model bytes do not hash to {record.model_hash}")
    try:
        genesis = decode_genesis(sources.genesis)
        recipe = recipe_of(sources.metadata, sources.genesis)
        tensors = deserialize_tensors(sources.model, max_bytes=max_bytes)
    except (MetadataError, MalformedBlob) as exc:
        raise ExportError(f"version {record.version}'s blobs are unusable: {exc}") from None

    files: dict[str, bytes] = {METADATA_NAME: sources.metadata, GENESIS_NAME: sources.genesis}
    export: dict[str, Any] = {
        "tool": f"fedledger {distribution_version('fedledger')}",
        "formats": options.formats,
        "signed": options.signing_key is not None,
    }
    parity = int8_accuracy = None
    if options.formats in ("safetensors", "both"):
        files[SAFETENSORS_NAME] = sources.model
    if options.formats in ("onnx", "both"):
        model = committed_module(genesis, tensors, options.task)
        examples = held_out(genesis, options.task, options.test_data)
        onnx_bytes = onnx_model.export_onnx(model, examples.x[:2], onnx_metadata(record))
        rebuilt = sha256_hex(serialize_tensors(onnx_model.initializer_tensors(onnx_bytes, sorted(tensors))))
        if rebuilt != record.model_hash:
            raise ExportError(f"the ONNX file's weights hash to {rebuilt}, not to the committed {record.model_hash}")
        parity = onnx_model.check_parity(model, onnx_bytes, examples.x, examples.y)
        if not parity.ok:
            raise ExportError(f"ONNX {parity.describe()}; nothing was written")
        files[ONNX_NAME] = onnx_bytes
        export["onnx"] = {
            "exporter": onnx_model.EXPORTER,
            "opset": onnx_model.OPSET,
            "toolchain": onnx_model.toolchain(),
            "input": {"name": onnx_model.INPUT_NAME, "shape": ["batch", *examples.x.shape[1:]], "dtype": "float32"},
            "output": {"name": onnx_model.OUTPUT_NAME},
            "weights": "each state_dict tensor is the initializer of the same name, bit for bit",
            "parity": parity.to_json(),
        }
        if options.int8:
            int8_bytes = onnx_model.quantize_int8(onnx_bytes)
            int8_accuracy = onnx_model.accuracy(int8_bytes, examples.x, examples.y)
            files[INT8_NAME] = int8_bytes
            export["int8"] = {
                "quantizer": onnx_model.QUANTIZER,
                "heldOutAccuracy": int8_accuracy,
                "floatAccuracy": parity.onnx_accuracy,
                "examples": parity.examples,
            }
    statement = build_statement({name: sha256_hex(data) for name, data in files.items()}, record, recipe, export)

    with _staging(out) as staging:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        (staging / PROVENANCE_NAME).write_bytes(encode_statement(statement))
        key_id = None
        if options.signing_key is not None and public_key is not None:
            sign_folder(staging, options.signing_key)
            key_id = verify_folder(staging, public_key).key_id  # what a recipient will run
    sizes = {path.name: path.stat().st_size for path in sorted(out.iterdir())}
    return ExportResult(out, sizes, statement, parity, int8_accuracy, key_id)


def onnx_metadata(record: ChainRecord) -> dict[str, str]:
    """The ONNX metadata properties: where the weights are anchored, readable by any ONNX tool."""
    return {
        "fedledger.chain_id": str(record.chain_id),
        "fedledger.contract": record.contract,
        "fedledger.model_hash": record.model_hash,
        "fedledger.version": str(record.version),
        "fedledger.round": str(record.round),
    }


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A fresh folder beside `out`, renamed to `out` when the block completes, removed if it fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
        staging.chmod(0o755)
        if out.exists():
            out.rmdir()  # checked empty before anything was computed
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class Check:
    """One thing `export verify` checked: `ok`, and what it found (named, with both values when they differ)."""

    name: str
    ok: bool
    detail: str


@dataclass
class ExportVerdict:
    folder: Path
    checks: list[Check] = field(default_factory=list)
    model_hash: str | None = None
    version: int | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def passed(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, True, detail))

    def failed(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, False, detail))

    def passed_check(self, name: str) -> bool:
        return any(check.name == name and check.ok for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "verified": self.ok,
            "model_hash": self.model_hash,
            "version": self.version,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


def verify_export(folder: Path, client: LedgerClient, *, public_key: Path | None, max_bytes: int) -> ExportVerdict:
    """Check `folder` against its signature (unless `public_key` is None), its statement, and the chain."""
    verdict = ExportVerdict(folder)
    present = _folder_files(folder, verdict, max_bytes)
    if present is None:
        return verdict
    if public_key is None:
        verdict.passed("signature", "not checked (--unsigned): the files are anchored by the chain checks below only")
    else:
        try:
            signed = verify_folder(folder, public_key)
            verdict.passed("signature", f"{SIGNATURE_NAME} verifies with key {signed.key_id} over {len(signed.files)} files")
        except (SignatureError, SigningKeyError) as exc:
            verdict.failed("signature", str(exc))

    read = _reader(folder)
    try:
        statement = decode_statement(read(PROVENANCE_NAME))
    except (ProvenanceError, OSError) as exc:
        verdict.failed("statement", str(exc) if isinstance(exc, ProvenanceError) else f"{PROVENANCE_NAME} is missing")
        return verdict
    verdict.model_hash = statement.model_hash
    _check_subjects(verdict, statement, present)
    contents = {name: read(name) for name in statement.subjects if name in present}
    _check_weights(verdict, statement, contents, max_bytes)
    _check_onnx_metadata(verdict, statement, contents)
    if INT8_NAME in contents and public_key is None:
        verdict.failed("int8", f"{INT8_NAME}'s weights are not on chain, so only a signature can vouch for it: verify with --public-key")
    record = _check_chain(verdict, statement, client)
    _check_pinned_blobs(verdict, statement, contents, record)
    _check_parity(verdict, statement, contents)
    return verdict


def _folder_files(folder: Path, verdict: ExportVerdict, max_bytes: int) -> set[str] | None:
    if not folder.is_dir():
        verdict.failed("folder", f"{folder} is not a folder")
        return None
    present, problems = set(), []
    for path in sorted(folder.iterdir()):
        if path.is_symlink() or not path.is_file():
            problems.append(f"{path.name} is not a regular file")
        elif path.stat().st_size > max_bytes:
            problems.append(f"{path.name} is larger than {max_bytes} bytes")
        else:
            present.add(path.name)
    if problems:
        verdict.failed("folder", "; ".join(problems))
        return None
    return present


def _reader(folder: Path) -> Callable[[str], bytes]:
    def read(name: str) -> bytes:
        return (folder / name).read_bytes()

    return read


def _check_subjects(verdict: ExportVerdict, statement: Statement, present: set[str]) -> None:
    expected = present - {SIGNATURE_NAME, PROVENANCE_NAME}
    problems = [f"{name}: listed in {PROVENANCE_NAME} but missing" for name in sorted(set(statement.subjects) - expected)]
    problems += [f"{name}: present but not listed in {PROVENANCE_NAME}" for name in sorted(expected - set(statement.subjects))]
    for name in sorted(expected & set(statement.subjects)):
        actual = sha256_hex((verdict.folder / name).read_bytes())
        if actual != statement.subjects[name]:
            problems.append(f"{name}: {PROVENANCE_NAME} says sha256 {statement.subjects[name]}, the file has {actual}")
    if problems:
        verdict.failed("files", "; ".join(problems))
    else:
        verdict.passed("files", f"{len(expected)} files, each hashes to its digest in {PROVENANCE_NAME}")


def _check_weights(verdict: ExportVerdict, statement: Statement, contents: Mapping[str, bytes], max_bytes: int) -> None:
    """Each model file's weights, re-serialized canonically, must hash to the statement's model hash."""
    model_hash, checked, problems = statement.model_hash, [], []
    names: tuple[str, ...] | None = None
    if SAFETENSORS_NAME in contents:
        actual = sha256_hex(contents[SAFETENSORS_NAME])
        checked.append(SAFETENSORS_NAME)
        if actual != model_hash:
            problems.append(f"{SAFETENSORS_NAME} hashes to {actual}, not to the model hash {model_hash}")
        else:
            try:
                names = tuple(sorted(deserialize_tensors(contents[SAFETENSORS_NAME], max_bytes=max_bytes)))
            except MalformedBlob as exc:
                problems.append(f"{SAFETENSORS_NAME} is not a canonical tensor blob: {exc}")
    if ONNX_NAME in contents:
        checked.append(f"{ONNX_NAME}'s initializers")
        try:
            if names is None:
                names = weight_names(decode_genesis(contents[GENESIS_NAME]))
            tensors = onnx_model.initializer_tensors(contents[ONNX_NAME], names)
            rebuilt = sha256_hex(serialize_tensors(tensors))
            if rebuilt != model_hash:
                problems.append(f"{ONNX_NAME}'s weights hash to {rebuilt}, not to the model hash {model_hash}")
        except (LedgerError, MetadataError, KeyError, ValueError) as exc:
            problems.append(f"{ONNX_NAME}'s weights cannot be read: {exc}")
    if not checked:
        problems.append(f"the folder holds neither {SAFETENSORS_NAME} nor {ONNX_NAME}")
    if problems:
        verdict.failed("weights", "; ".join(problems))
    else:
        verdict.passed("weights", f"{' and '.join(checked)} hash to {model_hash}")


def _check_onnx_metadata(verdict: ExportVerdict, statement: Statement, contents: Mapping[str, bytes]) -> None:
    predicate = statement.predicate
    expected = {
        "fedledger.chain_id": str(predicate["ledger"].get("chainId")),
        "fedledger.contract": str(predicate["ledger"].get("contract")),
        "fedledger.model_hash": statement.model_hash,
        "fedledger.version": str(predicate["model"].get("version")),
        "fedledger.round": str(predicate["model"].get("round")),
    }
    problems = []
    for name, extra in ((ONNX_NAME, {}), (INT8_NAME, {"fedledger.quantization": "int8"})):
        if name not in contents:
            continue
        try:
            found = {k: v for k, v in onnx_model.read_metadata(contents[name]).items() if k.startswith(onnx_model.METADATA_PREFIX)}
        except onnx_model.OnnxModelError as exc:
            problems.append(f"{name}: {exc}")
            continue
        wanted = {**expected, **extra}
        for key in sorted(set(wanted) | set(found)):
            if found.get(key) != wanted.get(key):
                problems.append(f"{name} metadata {key}: the file says {found.get(key)!r}, {PROVENANCE_NAME} says {wanted.get(key)!r}")
    if problems:
        verdict.failed("onnx metadata", "; ".join(problems))
    elif ONNX_NAME in contents or INT8_NAME in contents:
        verdict.passed("onnx metadata", f"chain {expected['fedledger.chain_id']}, contract {expected['fedledger.contract']}, "
                       f"version {expected['fedledger.version']}, round {expected['fedledger.round']}")  # fmt: skip


def _check_chain(verdict: ExportVerdict, statement: Statement, client: LedgerClient) -> ChainRecord | None:
    record = read_chain_record(client, statement.model_hash)
    if record is None:
        verdict.failed(
            "chain",
            f"model {statement.model_hash} is not a committed version on ledger {client.address} (chain {client.chain_id})",
        )
        return None
    verdict.version = record.version
    actual = record.to_json()
    mismatches = differences(statement.predicate, actual, CHAIN_SECTIONS)
    if mismatches:
        verdict.failed("chain", "; ".join(f"{name}: {PROVENANCE_NAME} says {_show(claimed)}, the chain says {_show(real)}"
                                          for name, claimed, real in mismatches))  # fmt: skip
    else:
        verdict.passed(
            "chain",
            f"version {record.version} (round {record.round}) committed in block {record.block}, tx {record.transaction}, "
            f"on chain {record.chain_id} at {record.contract}",
        )
    _check_attestations(verdict, statement.predicate, actual)
    return record


def _check_attestations(verdict: ExportVerdict, claimed: Mapping[str, Any], actual: Mapping[str, Any]) -> None:
    """Each listed attestation is an event on chain; a resolution it claims holds (resolutions are final,
    so one made since is fine); the quorum is the contract's; ok and failed counts have not shrunk."""

    def event(attestation: Any) -> Any:
        return {k: v for k, v in attestation.items() if k != "resolved"} if isinstance(attestation, dict) else attestation

    on_chain = actual["attestations"]
    listed = claimed.get("attestations", [])
    problems = []
    resolved_since = 0
    for attestation in listed:
        found = next((a for a in on_chain if event(a) == event(attestation)), None)
        if found is None:
            problems.append(f"not on chain: {attestation}")
        elif attestation.get("resolved") is True and found["resolved"] is not True:
            problems.append(f"{attestation['auditor']}'s attestation is listed as resolved, the chain has no resolution")
        elif attestation.get("resolved") is not True and found["resolved"] is True:
            resolved_since += 1
    gate, chain_gate = claimed.get("attestationGate", {}), actual["attestationGate"]
    if type(gate.get("quorum")) is not int or gate.get("quorum") != chain_gate["quorum"]:
        problems.append(f"attestationGate.quorum: {PROVENANCE_NAME} says {_show(gate.get('quorum'))}, the chain says {chain_gate['quorum']}")
    for name in ("okCount", "failedCount"):
        count = gate.get(name)
        if type(count) is not int or count > chain_gate[name]:
            problems.append(f"attestationGate.{name}: {PROVENANCE_NAME} says {_show(count)}, the chain counts {chain_gate[name]}")
    if problems:
        verdict.failed("attestations", "; ".join(problems))
        return
    later = len(on_chain) - len(listed)
    verdict.passed(
        "attestations",
        f"{len(listed)} listed, each on chain; quorum {chain_gate['quorum']}"
        + (f"; {later} more made since" if later else "")
        + (f"; {resolved_since} resolved since" if resolved_since else ""),
    )


def _check_pinned_blobs(
    verdict: ExportVerdict, statement: Statement, contents: Mapping[str, bytes], record: ChainRecord | None
) -> None:
    """metadata.json and genesis.json must be the blobs whose hashes the chain holds, and say what the statement says."""
    problems = []
    chain = record.to_json() if record is not None else statement.predicate
    for name, wanted, role in (
        (METADATA_NAME, chain["round"].get("metadataHash"), "the version's metadata"),
        (GENESIS_NAME, chain["genesis"].get("metadataHash"), "the genesis metadata"),
    ):
        if name not in contents:
            problems.append(f"{name} is missing")
        elif sha256_hex(contents[name]) != wanted:
            problems.append(f"{name} hashes to {sha256_hex(contents[name])}, but {role} hash is {wanted}")
    if not problems:
        try:
            recipe = recipe_of(contents[METADATA_NAME], contents[GENESIS_NAME]).to_json()
        except MetadataError as exc:
            problems.append(f"the metadata is unusable: {exc}")
        else:
            problems += [f"{name}: {PROVENANCE_NAME} says {_show(claimed)}, the pinned metadata says {_show(real)}"
                         for name, claimed, real in differences(statement.predicate, recipe, RECIPE_SECTIONS)]  # fmt: skip
    if problems:
        verdict.failed("metadata", "; ".join(problems))
    else:
        aggregation = statement.predicate.get("aggregation")
        made = f"rule {aggregation['rule']} {aggregation['params']}" if aggregation else "genesis (no rule)"
        verdict.passed("metadata", f"{METADATA_NAME} and {GENESIS_NAME} are the blobs the chain pins; {made}")


def _check_parity(verdict: ExportVerdict, statement: Statement, contents: Mapping[str, bytes]) -> None:
    """Re-run the held-out split through the committed weights in torch and through the ONNX file."""
    if ONNX_NAME not in contents or GENESIS_NAME not in contents or not verdict.passed_check("weights"):
        return
    try:
        genesis = decode_genesis(contents[GENESIS_NAME])
        model = committed_module(genesis, onnx_model.initializer_tensors(contents[ONNX_NAME], weight_names(genesis)))
        examples = held_out(genesis)
    except ModelUnavailable as exc:  # the weights are checked above; the task's code is needed only to re-run
        verdict.passed("parity", f"not re-run here: {exc}")
        return
    except (LedgerError, MetadataError, ValueError) as exc:
        verdict.failed("parity", f"cannot re-run {ONNX_NAME}: {exc}")
        return
    try:
        parity = onnx_model.check_parity(model, contents[ONNX_NAME], examples.x, examples.y)
    except (LedgerError, ValueError, RuntimeError) as exc:  # ONNX Runtime refuses a graph it cannot run
        verdict.failed("parity", f"cannot re-run {ONNX_NAME}: {exc}")
        return
    if parity.ok:
        verdict.passed("parity", parity.describe())
    else:
        verdict.failed("parity", parity.describe())


def _show(value: Any) -> str:
    return "nothing" if value is None else repr(value)
