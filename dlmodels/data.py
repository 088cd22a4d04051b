"""Turning user data into arrays the model can take, with errors that say what is wrong."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dlmodels.errors import DataError, Loc


def to_array(values: Any, *, integer: bool = False, loc: Loc = ()) -> np.ndarray:
    """Nested lists (or an array) -> a new float32 (or int64) array; ragged lists, non-numbers,
    NaN, Inf and numbers beyond float32's range fail."""
    try:
        raw = np.asarray(values)
    except ValueError as error:
        raise DataError(_describe_bad_list(values, str(error)), loc) from None
    except (TypeError, OverflowError):
        raise DataError("expected numbers in nested lists", loc) from None
    if raw.dtype.kind not in "iuf":  # strings, booleans, objects (e.g. 10**400)
        raise DataError("expected numbers in nested lists (no strings, booleans or "
                        "integers beyond 64 bits)", loc)
    if integer:
        return _integers(raw.astype(np.float64), loc)
    with np.errstate(over="ignore"):  # 1e39 becomes inf, refused below
        array = raw.astype(np.float32)  # a copy: writable, as torch.from_numpy wants
    _check_finite(array, loc)
    return array


def _integers(array: np.ndarray, loc: Loc) -> np.ndarray:
    _check_finite(array, loc)
    if not np.array_equal(array, np.round(array)):
        raise DataError("expected integers (token ids or class labels)", loc)
    return array.astype(np.int64)


def _check_finite(array: np.ndarray, loc: Loc) -> None:
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0].tolist()
        raise DataError(f"NaN, infinite or out-of-range value at index {bad}; only finite "
                        "numbers within float32's range (about ±3.4e38) are allowed", loc)


def _describe_bad_list(values: Any, numpy_message: str) -> str:
    if "inhomogeneous" in numpy_message or "sequence" in numpy_message:
        where = _first_ragged(values, ())
        if where is not None:
            path, lengths = where
            return (f"ragged nested lists: the items at {list(path)} have lengths "
                    f"{lengths}; every item must have the same shape")
        return "ragged nested lists; every item must have the same shape"
    return f"expected numbers in nested lists ({numpy_message})"


def _first_ragged(values: Any, path: tuple[int, ...]) -> tuple[tuple[int, ...], list[int]] | None:
    """The first level whose items differ in length, for an error a user can act on."""
    if not isinstance(values, Sequence) or isinstance(values, str):
        return None
    lengths = [len(v) if isinstance(v, Sequence) and not isinstance(v, str) else -1 for v in values]
    if len(set(lengths)) > 1:
        return path, sorted(set(lengths))
    for index, item in enumerate(values):
        found = _first_ragged(item, (*path, index))
        if found is not None:
            return found
    return None


def check_inputs(x: np.ndarray, input_shape: Sequence[int], loc: Loc = ()) -> None:
    """x must be [N, *input_shape]."""
    if x.ndim == len(input_shape) and len(input_shape) >= 1 and list(x.shape) == list(input_shape):
        raise DataError(f"inputs have shape {list(x.shape)}, one sample; wrap it in a list: "
                        f"[N, *input_shape] = [N, {', '.join(map(str, input_shape))}]", loc)
    if list(x.shape[1:]) != list(input_shape) or x.ndim < 1 or x.shape[0] == 0:
        raise DataError(
            f"inputs have shape {list(x.shape)} but the model takes "
            f"[N, {', '.join(map(str, input_shape))}] (N samples of input_shape "
            f"{list(input_shape)})", loc)
