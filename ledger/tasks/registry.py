"""Finding a task: by name among the installed `fedledger.tasks` entry points, or as `package.module:attr`.

fedledger's built-in tasks are entry points of its own distribution, so every task, built-in or a
team's own, is found the same way; `fedledger task list` lists them. The attribute may be a `Task`
instance or a `Task` subclass (instantiated with no arguments).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points

from ledger.core.task import Task, TaskError

ENTRY_POINT_GROUP = "fedledger.tasks"
DEFAULT_TASK = "digits-mlp"


class TaskNotFound(TaskError):
    """No installed task has the name, or the `module:attr` reference does not resolve."""


@dataclass(frozen=True)
class InstalledTask:
    """One entry point of the `fedledger.tasks` group: the task's name and where it lives."""

    name: str
    reference: str  # package.module:attr
    distribution: str | None


def installed_tasks() -> list[InstalledTask]:
    """Every task installed in this environment, by name."""
    found: dict[str, InstalledTask] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        distribution = point.dist.name if point.dist is not None else None
        found.setdefault(point.name, InstalledTask(point.name, point.value, distribution))
    return [found[name] for name in sorted(found)]


def load_task(reference: str) -> Task:
    """The task named `reference` (an installed entry point) or at `reference` = package.module:attr."""
    return _import(reference) if ":" in reference else load_installed_task(reference)


def load_installed_task(name: str) -> Task:
    """The installed task with this entry-point name; never imports a module the name spells.

    For names read from untrusted bytes (a genesis record): only entry points that someone
    installed here can be loaded, so a crafted name cannot make the auditor import other code.
    """
    for installed in installed_tasks():
        if installed.name == name:
            task = _import(installed.reference)
            if task.name != name:
                raise TaskError(f"entry point {name!r} ({installed.reference}) gives a task named {task.name!r}")
            return task
    known = ", ".join(task.name for task in installed_tasks()) or "none"
    raise TaskNotFound(f"no installed task is named {name!r} (installed: {known}); or pass package.module:attr")


def _import(reference: str) -> Task:
    module_name, _, attribute = reference.partition(":")
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskNotFound(f"cannot import the task module {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise TaskNotFound(f"module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(target, type) and issubclass(target, Task):
        target = target()
    if not isinstance(target, Task):
        raise TaskError(f"{reference} is a {type(target).__name__}, not a fedledger Task")
    return target
