"""The torch module of a committed version, and the held-out examples an export is checked on.

Genesis pins the federation's task spec (name, version, code hash, hyperparameters, tensor
manifest). The module is the pinned task's model, built by the task installed here (whose spec
must be the pinned one), with the version's committed weights loaded: anything that takes a
module (ONNX export, parity) works on any version of any task. The names of the weights come
from the pinned manifest alone, so checking an export's weights needs no task code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ledger.core.errors import LedgerError
from ledger.core.metadata import GenesisRecord
from ledger.core.model import load_state
from ledger.core.task import Task, TaskError
from ledger.core.task_spec import first_difference
from ledger.tasks.registry import load_installed_task
from ledger.tasks.spec import task_spec


class ModelUnavailable(LedgerError):
    """The pinned task is not installed here (or differs), has no held-out data, or the weights do not fit it."""


@dataclass(frozen=True)
class HeldOut:
    """Labelled examples nobody trained on: `x` float32 [n, ...], `y` int64 [n]."""

    x: torch.Tensor
    y: torch.Tensor


def pinned_task(genesis: GenesisRecord, task: Task | None = None) -> Task:
    """The task genesis pins, as installed here (or `task`, given by the caller); its spec must be the pinned one."""
    pinned = genesis.task
    install = f"install task {pinned.name!r} version {pinned.version!r} (code sha256 {pinned.code_sha256})"
    try:
        chosen = task if task is not None else load_installed_task(pinned.name)
        local = task_spec(chosen, pinned.hyperparameters)
    except TaskError as exc:
        raise ModelUnavailable(f"{install} to rebuild this federation's model: {exc}") from None
    difference = first_difference(pinned, local)
    if difference is not None:
        raise ModelUnavailable(
            f"the task installed here differs from the one pinned at genesis at {difference.field} "
            f"(pinned {difference.pinned!r}, here {difference.local!r}): {install}"
        )
    return chosen


def committed_module(genesis: GenesisRecord, tensors: Mapping[str, torch.Tensor], task: Task | None = None) -> nn.Module:
    """The pinned task's model with `tensors` (a committed version's weights) loaded, in eval mode."""
    model = pinned_task(genesis, task).build_model(genesis.seed)
    try:
        load_state(model, tensors)
    except ValueError as exc:
        raise ModelUnavailable(f"the committed weights do not fit task {genesis.task.name!r}: {exc}") from None
    return model.eval()


def held_out(genesis: GenesisRecord, task: Task | None = None, test_data: Path | None = None) -> HeldOut:
    """Held-out examples of the pinned task: `test_data` (a file the task reads) or its bundled test split."""
    chosen = pinned_task(genesis, task)
    try:
        examples = chosen.load_data(test_data) if test_data is not None else chosen.bundled_data().test
    except (TaskError, LedgerError, ValueError, OSError) as exc:
        raise ModelUnavailable(f"no held-out data for task {chosen.name!r}: {exc} (pass --test-data FILE)") from None
    return HeldOut(x=examples.x, y=examples.y)


def weight_names(genesis: GenesisRecord) -> tuple[str, ...]:
    """The names of the tensors every version's blob holds: the pinned manifest's, sorted."""
    return tuple(sorted(tensor.name for tensor in genesis.task.tensors))
