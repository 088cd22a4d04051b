"""Uploaded datasets: JSON {x, y}, CSV (header row, a `target` column or `y_columns`) or NPZ.

Whatever the format, the arrays are stored as one NPZ (no pickles: `allow_pickle=False` both
ways), keyed by the hash of the tenant and the arrays, so the same data uploaded twice is stored
once and gets the same id.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from api.bodies import media_type
from api.errors import InvalidInput, NotFound, PayloadTooLarge, ServiceError
from api.models import Dataset
from dlmodels.data import to_array
from dlmodels.errors import DataError

Arrays = tuple[np.ndarray, np.ndarray]
FORMATS = {"application/json": "json", "text/csv": "csv", "application/x-npz": "npz",
           "application/octet-stream": "npz", "application/zip": "npz"}


class UnsupportedMediaType(ServiceError):
    status_code, type = 415, "unsupported_media_type"


def parse_upload(*, content_type: str, body: bytes,
                 y_columns: list[str] | None) -> tuple[str, Arrays]:
    kind = FORMATS.get(media_type(content_type))
    if kind is None:
        raise UnsupportedMediaType(f"cannot read a {content_type or 'missing'} content type; "
                                   f"send one of {sorted(FORMATS)}")
    try:
        parse = {"json": _from_json, "csv": _from_csv, "npz": _from_npz}[kind]
        x, y = parse(body, y_columns)
        for name, array in (("x", x), ("y", y)):
            _check_rows(name, array)
    except DataError as error:
        raise InvalidInput(error.message, list(error.loc)) from None
    if len(x) != len(y):
        raise InvalidInput(f"x has {len(x)} rows and y {len(y)}; both need the same number",
                           ["y"])
    return kind, (x, y)


def _check_rows(name: str, array: np.ndarray) -> None:
    """Every format's arrays are [N, ...] with N >= 1 and no empty axis: a scalar (`"y": 5`)
    or an empty list is refused here, whatever parser made the array."""
    if array.ndim == 0:
        raise DataError(f"{name} must be an array of rows ([N, ...]), not a single number",
                        (name,))
    if 0 in array.shape:
        raise DataError(f"{name} has shape {list(array.shape)}: it needs at least one row and "
                        "no empty axis", (name,))


def _from_json(body: bytes, _y_columns: list[str] | None) -> Arrays:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(f"not valid JSON: {error}") from None
    if not isinstance(data, dict) or set(data) != {"x", "y"}:
        raise DataError('a JSON dataset is an object {"x": [...], "y": [...]}')
    return to_array(data["x"], loc=("x",)), to_array(data["y"], loc=("y",))


def _from_csv(body: bytes, y_columns: list[str] | None) -> Arrays:
    try:
        rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"not a readable UTF-8 CSV: {error}") from None
    if len(rows) < 2:
        raise DataError("a CSV dataset needs a header row and at least one data row")
    header = [name.strip() for name in rows[0]]
    targets = y_columns or ["target"]
    missing = [name for name in targets if name not in header]
    if missing:
        raise DataError(f"no column {missing} in the header {header}; name the target columns "
                        "with ?y_columns=a,b or call the target column `target`", ("y_columns",))
    table = _numeric_table(rows[1:], len(header))
    y_index = [header.index(name) for name in targets]
    x_index = [i for i in range(len(header)) if i not in y_index]
    if not x_index:
        raise DataError("every column is a target; x needs at least one column")
    return table[:, x_index].astype(np.float32), table[:, y_index].astype(np.float32)


def _numeric_table(rows: list[list[str]], width: int) -> np.ndarray:
    table = np.empty((len(rows), width), dtype=np.float64)
    for r, row in enumerate(rows, start=2):
        if len(row) != width:
            raise DataError(f"CSV line {r} has {len(row)} fields; the header has {width}")
        try:
            table[r - 2] = [float(cell) for cell in row]
        except ValueError:
            raise DataError(f"CSV line {r} holds a value that is not a number: {row}") from None
    if not np.isfinite(table).all():
        raise DataError("the CSV holds NaN or infinite values")
    return table


def _from_npz(body: bytes, _y_columns: list[str] | None) -> Arrays:
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as archive:
            if not {"x", "y"} <= set(archive.files):
                raise DataError(f"an NPZ dataset holds arrays named x and y; this one has "
                                f"{archive.files}")
            x, y = archive["x"], archive["y"]
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise DataError(f"not a readable NPZ of numeric arrays: {error}") from None
    for name, array in (("x", x), ("y", y)):
        if array.dtype.kind not in "iuf":
            raise DataError(f"{name} must be a numeric array, not {array.dtype}", (name,))
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise DataError(f"{name} holds NaN or infinite values", (name,))
    x = x.astype(np.int64) if x.dtype.kind in "iu" else x.astype(np.float32)
    return x, y.astype(np.float32)


def _canonical(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=x, y=y)
    return buffer.getvalue()


def store_dataset(session: Session, *, tenant: str, kind: str, arrays: Arrays,
                  max_bytes: int) -> tuple[Dataset, bool]:
    """Store the arrays unless this tenant already has them; returns (dataset, created)."""
    x, y = arrays
    digest = hashlib.sha256(tenant.encode() + b"\0" + x.tobytes() + str(x.shape).encode()
                            + y.tobytes() + str(y.shape).encode()).hexdigest()[:32]
    existing = session.get(Dataset, digest)
    if existing is not None:
        return existing, False
    data = _canonical(x, y)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the dataset takes {len(data)} bytes stored; the limit is "
                              f"{max_bytes}")
    dataset = Dataset(id=digest, tenant=tenant, format=kind, n=len(x), size_bytes=len(data),
                      x_shape={"shape": list(x.shape), "dtype": str(x.dtype)},
                      y_shape={"shape": list(y.shape), "dtype": str(y.dtype)}, data=data)
    session.add(dataset)
    session.commit()
    return dataset, True


def get_dataset(session: Session, *, dataset_id: str, tenant: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.tenant != tenant:
        raise NotFound(f"no dataset {dataset_id!r}")
    return dataset


def dataset_arrays(dataset: Dataset) -> Arrays:
    with np.load(io.BytesIO(dataset.data), allow_pickle=False) as archive:
        return archive["x"], archive["y"]


def dataset_out(dataset: Dataset) -> dict[str, Any]:
    return {"id": dataset.id, "n": dataset.n, "x_shape": dataset.x_shape["shape"],
            "y_shape": dataset.y_shape["shape"], "format": dataset.format,
            "size_bytes": dataset.size_bytes, "created_at": dataset.created_at}
