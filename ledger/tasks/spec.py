"""A task's spec as this process sees it: its manifest, code hash, hyperparameters and assets.

The code hash is the SHA-256 of the task's package source: every `.py` file under the package
that holds the task's class (or `Task.code_package`), by path relative to it. Editable and
regular installs of the same source give the same hash, which a distribution's RECORD would not
(an editable install records a finder, not the sources).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path

from ledger.core.hashing import sha256_hex
from ledger.core.safe_json import canonical_json
from ledger.core.task import Task, TaskError, resolve_hyperparameters
from ledger.core.manifest import tensor_manifest
from ledger.core.task_spec import TaskSpec


def task_spec(task: Task, overrides: Mapping[str, object] | None = None) -> TaskSpec:
    """The spec of `task` with `overrides` applied to its default hyperparameters."""
    if not isinstance(getattr(task, "name", None), str) or not task.name or not isinstance(getattr(task, "version", None), str):
        raise TaskError(f"{type(task).__name__} needs a non-empty string `name` and a string `version`")
    hyperparameters = resolve_hyperparameters(task, overrides or {})
    try:
        manifest = tensor_manifest(task.build_model(0).state_dict(), task.trainable)
    except ValueError as exc:
        raise TaskError(f"task {task.name!r}: {exc}") from None
    return TaskSpec(
        name=task.name,
        version=task.version,
        code_sha256=code_sha256(task),
        hyperparameters=hyperparameters,
        tensors=manifest,
        assets=dict(task.assets()),
    )


def code_sha256(task: Task) -> str:
    """SHA-256 of the canonical JSON {relative path: SHA-256 of the file} of the task's source files."""
    return sha256_hex(canonical_json({path: sha256_hex(data) for path, data in code_files(task).items()}))


def code_files(task: Task) -> dict[str, bytes]:
    """The task's source: every .py file of its package (or its lone module file), by relative path."""
    package = task.code_package
    if package is None:
        module = sys.modules[type(task).__module__]
        package = module.__package__ or None
        if package is None:  # a top-level module (or a script): the file itself is the code
            return {Path(module.__file__ or "").name: Path(module.__file__ or "").read_bytes()}
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TaskError(f"task {task.name!r}: {package!r} is not an importable package")
    root = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(
        path
        for path in root.rglob("*.py")
        if not any(part == "__pycache__" or part.startswith(".") for part in path.relative_to(root).parts)
    )
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in files}
