"""A node's data files: `.npz` arrays and CSV tables in, checked arrays out; nothing is ever unpickled.

Every problem (a missing or unreadable file, a missing array, a wrong shape, a label the task does
not know, no rows at all) is a `DataError` whose one-line message names the file and the fault, so
a node refuses bad data before it touches the chain. `.npz` files are read with
`allow_pickle=False`: object arrays and pickled payloads are refused, never loaded.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ledger.core.errors import LedgerError


class DataError(LedgerError):
    """A data file that cannot be used; the message is one line naming the file and the fault."""

    def __init__(self, source: Path | str, problem: str) -> None:
        super().__init__(f"{source}: {' '.join(problem.split())}")


def read_npz(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays `names` of the `.npz` archive at `path` (no pickle, no object arrays)."""
    if not path.is_file():
        raise DataError(path, "no such file" if not path.exists() else "not a file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(path, f"not a readable .npz archive ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(path, f"a single .npy array, not an .npz archive holding {', '.join(names)}")
    with archive:
        missing = [name for name in names if name not in archive.files]
        if missing:
            raise DataError(path, f"no array {missing[0]!r} (the archive holds {sorted(archive.files)})")
        try:
            return {name: archive[name] for name in names}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(path, f"unreadable array ({exc})") from None


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """An uncompressed `.npz` archive of plain numeric arrays (what `read_npz` reads back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        np.savez(file, allow_pickle=False, **arrays)


def read_csv(path: Path, header: Sequence[str]) -> np.ndarray:
    """A CSV table with exactly `header` as its first row, every other cell a number: float64 [rows, columns]."""
    if not path.is_file():
        raise DataError(path, "no such file" if not path.exists() else "not a file")
    try:
        with path.open(newline="", encoding="utf-8") as file:
            rows = list(csv.reader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(path, f"not a readable CSV file ({exc})") from None
    if not rows or rows[0] != list(header):
        found = rows[0][:3] if rows else "nothing"
        raise DataError(path, f"the first row must be the {len(header)} column names {list(header[:3])}…, found {found}")
    table = np.empty((len(rows) - 1, len(header)), dtype=np.float64)
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(path, f"line {number} has {len(row)} cells, the header {len(header)}")
        for column, cell in enumerate(row):
            try:
                table[number - 2, column] = float(cell)
            except ValueError:
                raise DataError(path, f"line {number}, column {header[column]!r}: {cell[:20]!r} is not a number") from None
    return table


def write_csv(path: Path, header: Sequence[str], table: np.ndarray) -> None:
    """`table` under `header`, each value written so it reads back bit-identical (repr of the float)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows([repr(float(value)) for value in row] for row in np.asarray(table, dtype=np.float64))


def checked_labelled(
    source: Path | str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    feature_shape: tuple[int, ...],
    num_classes: int,
    value_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`(x, y)` as float64 [n, *feature_shape] and int64 [n], after checking everything a task relies on."""
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise DataError(source, f"x and y must be numeric arrays, got {x.dtype} and {y.dtype}")
    if x.ndim == 0 or len(x) == 0:
        raise DataError(source, "no samples")
    if tuple(x.shape[1:]) != tuple(feature_shape):
        wanted = "[n, " + ", ".join(str(n) for n in feature_shape) + "]"
        raise DataError(source, f"x has shape {tuple(x.shape)}, this task needs {wanted}")
    if y.shape != (len(x),):
        raise DataError(source, f"y has shape {tuple(y.shape)}, this task needs [{len(x)}] (one label per row of x)")
    features = np.asarray(x, dtype=np.float64)
    bad_rows = np.flatnonzero(~np.isfinite(features.reshape(len(features), -1)).all(axis=1))
    if len(bad_rows):
        raise DataError(source, f"row {int(bad_rows[0])} of x holds NaN or infinity")
    if value_range is not None:
        low, high = value_range
        outside = np.flatnonzero(((features < low) | (features > high)).reshape(len(features), -1).any(axis=1))
        if len(outside):
            raise DataError(source, f"row {int(outside[0])} of x has values outside {low:g}..{high:g}")
    labels = np.asarray(y, dtype=np.float64)
    unknown = np.flatnonzero((labels != np.floor(labels)) | (labels < 0) | (labels >= num_classes))
    if len(unknown):
        row = int(unknown[0])
        raise DataError(source, f"label {y[row].item()!r} at row {row} is not a class of this task (0..{num_classes - 1})")
    return features, labels.astype(np.int64)
