"""`fedledger task list | show | new`: the tasks installed here, the spec a federation would pin, a new task package."""

from __future__ import annotations

import argparse
import json
import re
from importlib.abc import Traversable
from importlib.resources import files
from pathlib import Path

TEMPLATE = "task_template"
_TASK_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from ledger.cli.wiring import add_hyperparameter_arguments

    task = subparsers.add_parser("task", help="list, show or create tasks (the model, data and training a federation pins)")
    sub = task.add_subparsers(dest="task_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="the tasks installed here (entry point group fedledger.tasks)")
    listing.set_defaults(handler=_list)
    show = sub.add_parser("show", help="a task's spec (what genesis pins) and its spec hash")
    show.add_argument("task", metavar="TASK", help="an installed task's name or package.module:attr")
    add_hyperparameter_arguments(show)
    show.add_argument("--json", action="store_true", help="print only {spec_hash, spec} as JSON")
    show.set_defaults(handler=_show)
    new = sub.add_parser("new", help="write an installable task package: pyproject, task module, federation test")
    new.add_argument("name", help="the task's name: lowercase letters, digits and hyphens (e.g. my-task)")
    new.add_argument("--out", type=Path, default=Path("."), help="the folder to create NAME/ in (default: here)")
    new.set_defaults(handler=_new)


def _list(args: argparse.Namespace) -> int:
    from ledger.core.task import TaskError
    from ledger.tasks.registry import installed_tasks, load_task

    rows = []
    for installed in installed_tasks():
        try:
            version = load_task(installed.name).version
        except TaskError as exc:
            version = f"(cannot load: {exc})"
        rows.append((installed.name, version, f"{installed.reference} ({installed.distribution or '?'})"))
    width = max([len("NAME")] + [len(name) for name, _, _ in rows])
    print(f"{'NAME':<{width}}  {'VERSION':<8} FROM")
    for name, version, source in rows:
        print(f"{name:<{width}}  {version:<8} {source}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from ledger.cli.errors import CommandError
    from ledger.cli.wiring import resolve_task
    from ledger.core.errors import LedgerError
    from ledger.tasks.spec import task_spec

    task, overrides = resolve_task(args)
    try:
        spec = task_spec(task, overrides)
    except LedgerError as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print(json.dumps({"spec_hash": spec.spec_hash, "spec": spec.to_json()}, sort_keys=True))
        return 0
    trainable = sum(1 for t in spec.tensors if t.trainable)
    print(f"task {spec.name} version {spec.version}")
    print(f"spec sha256 {spec.spec_hash}")
    print(f"code sha256 {spec.code_sha256}")
    print(f"tensors: {len(spec.tensors)} ({trainable} trainable, travel in updates)")
    print(json.dumps(spec.to_json(), indent=2, sort_keys=True))
    return 0


def _new(args: argparse.Namespace) -> int:
    from ledger.cli.errors import CommandError, UsageError

    name = args.name
    if not _TASK_NAME.fullmatch(name):
        raise UsageError(f"task name {name!r}: use lowercase letters, digits and single hyphens, starting with a letter")
    package = name.replace("-", "_")
    target = args.out / name
    if target.exists() and any(target.iterdir()):
        raise CommandError(f"{target} exists and is not empty: choose another --out or name")
    values = {
        "name": name,
        "package": package,
        "class": "".join(part.capitalize() for part in name.split("-")) + "Task",
    }
    written = []
    template = files("ledger.cli") / TEMPLATE
    for relative in _template_files(template):
        text = (template / relative).read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        destination = target / relative.removesuffix(".tmpl").replace("package/", f"{package}/", 1)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(text, encoding="utf-8")
        written.append(destination)
    print(f"wrote {target}/ ({len(written)} files):")
    for path in written:
        print(f"  {path}")
    print(f"next: pip install --no-build-isolation -e {target} && python -m pytest {target}")
    return 0


def _template_files(root: Traversable) -> list[str]:
    """Relative paths of the template's files (importlib.resources traversables, not only folders)."""
    found = []
    pending = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        for entry in folder.iterdir():
            if entry.name == "__pycache__":
                continue
            if entry.is_dir():
                pending.append((f"{prefix}{entry.name}/", entry))
            else:
                found.append(prefix + entry.name)
    return sorted(found)
