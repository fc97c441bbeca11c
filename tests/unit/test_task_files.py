"""A node's data files (one-line refusals, nothing unpickled, bit-exact round trips) and a task's code hash."""

from __future__ import annotations

import pickle
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ledger.tasks.breast_cancer import BREAST_CANCER_LOGREG
from ledger.tasks.digits import DIGITS_MLP
from ledger.tasks.files import DataError
from ledger.tasks.registry import load_task
from ledger.tasks.spec import code_sha256

X = np.arange(3 * 64, dtype=np.float64).reshape(3, 64) % 17
Y = np.array([0, 9, 4])


class PlantsAFile:
    """Unpickling this would create a file: proof, if it exists, that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("write", "problem"),
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.write_text("x,y\n1,2\n"), p)[1], "not a readable .npz archive"),
        (lambda p: np.save(p.with_suffix(".npy"), X) or p.with_suffix(".npy"), "a single .npy array, not an .npz"),
        (lambda p: _npz(p, x=X), "no array 'y'"),
        (lambda p: _npz(p, x=X[:, :63], y=Y), r"x has shape \(3, 63\), this task needs \[n, 64\]"),
        (lambda p: _npz(p, x=X, y=Y[:2]), r"y has shape \(2,\), this task needs \[3\]"),
        (lambda p: _npz(p, x=X, y=np.array([0, 10, 4])), "label 10 at row 1 is not a class of this task"),
        (lambda p: _npz(p, x=X, y=np.array([0, -1, 4])), "label -1 at row 1 is not a class of this task"),
        (lambda p: _npz(p, x=X[:0], y=Y[:0]), "no samples"),
        (lambda p: _npz(p, x=np.where(X == 5, np.nan, X), y=Y), "row 0 of x holds NaN or infinity"),
        (lambda p: _npz(p, x=X + 1, y=Y), "row 0 of x has values outside 0..16"),
        (lambda p: _npz(p, x=X.astype(str), y=Y), "x and y must be numeric arrays"),
    ],
    ids=[
        "missing", "text", "npy", "no-y", "x-shape", "y-shape", "label-too-big", "label-negative", "empty",
        "nan", "out-of-range", "strings",
    ],
)  # fmt: skip
def test_a_bad_npz_is_refused_in_one_line_naming_the_file(tmp_path: Path, write, problem: str) -> None:
    path = write(tmp_path / "node.npz")

    with pytest.raises(DataError, match=problem) as raised:
        DIGITS_MLP.load_data(path)

    assert str(raised.value).startswith(f"{path}: ") and "\n" not in str(raised.value)


@pytest.mark.parametrize("container", ["npz-object-array", "raw-pickle"])
def test_pickled_payloads_are_refused_never_unpickled(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "node.npz"
    if container == "npz-object-array":
        np.savez(path, x=np.array([PlantsAFile(marker)], dtype=object), y=Y[:1])
    else:
        path.write_bytes(pickle.dumps({"x": PlantsAFile(marker), "y": Y}))

    with pytest.raises(DataError):
        DIGITS_MLP.load_data(path)

    assert not marker.exists()


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda lines: ["a,b,c"] + lines[1:], "the first row must be the 31 column names"),
        (lambda lines: lines[:2] + [lines[2].replace(lines[2].split(",")[0], "lots", 1)], "line 3, column 'mean radius': 'lots' is not a number"),
        (lambda lines: lines[:2] + [lines[2].rsplit(",", 1)[0]], "line 3 has 30 cells, the header 31"),
        (lambda lines: lines[:2] + [lines[2].rsplit(",", 1)[0] + ",2.0"], "label 2.0 at row 1 is not a class of this task"),
        (lambda lines: lines[:1], "no samples"),
    ],
    ids=["header", "cell", "short-row", "label", "no-rows"],
)  # fmt: skip
def test_a_bad_csv_is_refused_in_one_line(tmp_path: Path, edit, problem: str) -> None:
    path = tmp_path / "node.csv"
    BREAST_CANCER_LOGREG.save_data(BREAST_CANCER_LOGREG.bundled_data().test, path)
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")

    with pytest.raises(DataError, match=problem) as raised:
        BREAST_CANCER_LOGREG.load_data(path)

    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "digits-finetune", "breast-cancer-logreg"])
def test_saved_data_loads_back_bit_for_bit(tmp_path: Path, name: str) -> None:
    task = load_task(name)
    data = task.bundled_data().test
    path = tmp_path / f"test{task.data_suffix}"

    task.save_data(data, path)
    loaded = task.load_data(path)

    assert loaded.x.dtype == torch.float32 and loaded.y.dtype == torch.int64
    assert torch.equal(loaded.x, data.x) and torch.equal(loaded.y, data.y)


# --------------------------------------------------------------------------- code hash


def _package(root: Path, name: str) -> Path:
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "task.py").write_text(
        textwrap.dedent(
            """
            from torch import nn
            from ledger.tasks.digits import DigitsTask

            class Toy(DigitsTask):
                name = "toy"

                def build_model(self, seed):
                    return nn.Linear(64, 10)

            TASK = Toy()
            """
        )
    )
    (package / "helpers.py").write_text("SCALE = 1\n")
    return package


def test_the_code_hash_covers_every_python_file_of_the_task_package(tmp_path: Path, monkeypatch) -> None:
    package = _package(tmp_path, "toy_code_hash_pkg")
    monkeypatch.syspath_prepend(str(tmp_path))
    task = load_task("toy_code_hash_pkg.task:TASK")
    try:
        first = code_sha256(task)
        (package / "__pycache__").mkdir()
        (package / "__pycache__" / "stale.py").write_text("ignored")
        same = code_sha256(task)
        (package / "helpers.py").write_text("SCALE = 2\n")  # not the task's module, but its package's code
        changed = code_sha256(task)
    finally:
        for module in [m for m in sys.modules if m.startswith("toy_code_hash_pkg")]:
            del sys.modules[module]

    assert first == same != changed
    assert code_sha256(DIGITS_MLP) == code_sha256(BREAST_CANCER_LOGREG)  # the built-ins: all of ledger/tasks/


def test_a_task_reference_that_does_not_resolve_says_why() -> None:
    with pytest.raises(Exception, match="no installed task is named 'nope'"):
        load_task("nope")
    with pytest.raises(Exception, match="cannot import the task module 'no_such_module'"):
        load_task("no_such_module:TASK")
    with pytest.raises(Exception, match="has no attribute 'MISSING'"):
        load_task("ledger.tasks.digits:MISSING")
    with pytest.raises(Exception, match="is a int, not a fedledger Task"):
        load_task("ledger.tasks.digits:NUM_CLASSES")
