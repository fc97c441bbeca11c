"""`GET /api/v1/models/<hash>/export`: a committed version's export folder as a tar download — unsigned.

Unsigned on purpose. A service that signs what it is asked to would be a signing oracle for
anyone who can reach it; signing when a version is committed would put a second private key, the
ONNX toolchain and seconds of export into the aggregator's commit path, for signatures that
cannot be re-derived (ECDSA nonces) and so would need a store of their own. The chain already
anchors what matters: the folder's safetensors and ONNX weights re-hash to the on-chain model hash
and its metadata blobs to the on-chain metadata hashes, which `fedledger export verify DIR
--unsigned` checks. `provenance.json` says `"signed": false` and the `X-Fedledger-Signed: false`
header says it again; whoever needs a signature exports with their own key (`fedledger export
MODEL_HASH --signing-key KEY.pem`). The folder is built from the chain and the blob store, never
from the SQL index.
"""

from __future__ import annotations

import io
import logging
import tarfile
import tempfile
import threading
from pathlib import Path

from flask import Blueprint, Response, request

from ledger.api.services import services
from ledger.api.v1.common import hash_arg, problem

log = logging.getLogger(__name__)

blueprint = Blueprint("export", __name__)

# torch's exporter is not made for concurrent calls, and one export already keeps a core busy.
_ONE_EXPORT_AT_A_TIME = threading.Lock()


@blueprint.get("/models/<model_hash>/export")
def export_model(model_hash: str) -> Response:
    """The export folder (`?format=both|onnx|safetensors`, default both) as an uncompressed tar."""
    from ledger.export.facts import VersionNotFound
    from ledger.export.folder import FORMATS, ExportError, ExportOptions, gather, write_export

    model_hash = hash_arg(model_hash, "model hash")
    formats = request.args.get("format", "both")
    if formats not in FORMATS:
        return problem(400, f"format must be one of {', '.join(FORMATS)}, not {formats!r}")
    found = services()
    if found.ledger is None:
        return problem(503, "this service has no ledger configured, so there is no record to export from")
    with _ONE_EXPORT_AT_A_TIME, tempfile.TemporaryDirectory(prefix="fedledger-export-") as work:
        try:
            sources = gather(found.ledger, found.store, model_hash, max_bytes=found.max_blob_bytes)
        except VersionNotFound as exc:
            return problem(404, str(exc), model_hash=model_hash)
        except ExportError as exc:
            return problem(503, str(exc), model_hash=model_hash)
        except Exception:  # the RPC can fail in many ways; none of them is an answer
            log.exception("cannot read the chain's record of %s", model_hash)
            return problem(503, "the chain could not be read; retry later", model_hash=model_hash)
        folder_name = f"fedledger-v{sources.record.version}-{model_hash[:12]}"
        try:
            result = write_export(
                Path(work) / folder_name, sources, ExportOptions(formats=formats), max_bytes=found.max_blob_bytes
            )
        except ExportError as exc:
            log.warning("export of %s failed: %s", model_hash, exc)
            return problem(500, f"the export failed: {exc}", model_hash=model_hash)
        archive = _tar(result.folder, folder_name)
    response = Response(archive, mimetype="application/x-tar")
    response.headers["Content-Disposition"] = f'attachment; filename="{folder_name}.tar"'
    response.headers["X-Fedledger-Signed"] = "false"
    response.headers["X-Fedledger-Model-Hash"] = model_hash
    return response


def _tar(folder: Path, top: str) -> bytes:
    """The folder's files under `top/`, with fixed owners, modes and times: the same files, the same bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for path in sorted(folder.iterdir()):
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{top}/{path.name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
