"""Reading the CLI's input files into numpy arrays: .json, .npy, .npz, .csv."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np


class FileError(ValueError):
    """An input file the CLI cannot use (exit code 2)."""


def read_inputs(path: str) -> np.ndarray:
    """Inputs for predict: a .npy array, a .json list (or {"inputs": [...]}), a .csv of
    numbers (a header row is skipped)."""
    kind = Path(path).suffix.lower()
    try:
        if kind == ".npy":
            return np.load(path, allow_pickle=False)
        if kind == ".json":
            loaded = json.loads(Path(path).read_text())
            return np.asarray(loaded["inputs"] if isinstance(loaded, dict) else loaded)
        if kind == ".csv":
            _, rows = _csv(path)
            return np.asarray(rows, dtype=np.float64)
    except (OSError, ValueError, KeyError) as error:
        raise FileError(f"cannot read {path}: {error}") from None
    raise FileError(f"{path}: inputs are a .json, .npy or .csv file, not {kind or 'no suffix'}")


def read_xy(path: str) -> tuple[np.ndarray, np.ndarray]:
    """x and y for evaluate: .json {x, y}, .npz with arrays x and y, or a .csv whose `target`
    column (else its last column) is y."""
    kind = Path(path).suffix.lower()
    try:
        if kind == ".json":
            loaded = json.loads(Path(path).read_text())
            return np.asarray(loaded["x"]), np.asarray(loaded["y"])
        if kind == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                return np.asarray(arrays["x"]), np.asarray(arrays["y"])
        if kind == ".csv":
            header, rows = _csv(path)
            table = np.asarray(rows, dtype=np.float64)
            target = header.index("target") if header and "target" in header else -1
            return np.delete(table, target, axis=1), table[:, target]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FileError(f"cannot read {path}: {error}") from None
    raise FileError(f"{path}: x and y are a .json, .npz or .csv file, not {kind or 'no suffix'}")


def _csv(path: str) -> tuple[list[str] | None, list[list[float]]]:
    rows = list(csv.reader(io.StringIO(Path(path).read_text(encoding="utf-8-sig"))))
    rows = [row for row in rows if row]
    header = None
    if rows and not _numeric(rows[0]):
        header, rows = [name.strip() for name in rows[0]], rows[1:]
    if not rows:
        raise ValueError("no data rows")
    return header, [[float(value) for value in row] for row in rows]


def _numeric(row: list[str]) -> bool:
    try:
        [float(value) for value in row]
    except ValueError:
        return False
    return True


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)
