"""dlmodels.data.to_array: what user numbers become before they reach a model."""

from __future__ import annotations

import numpy as np
import pytest

from dlmodels.data import to_array
from dlmodels.errors import DataError


def test_floats_become_a_new_writable_float32_array() -> None:
    source = np.arange(6, dtype=np.float64).reshape(2, 3)
    source.setflags(write=False)  # as a .npy body read without a copy
    array = to_array(source)
    assert array.dtype == np.float32 and array.flags.writeable
    assert not np.shares_memory(array, source)
    np.testing.assert_array_equal(array, source)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e39, -1e39])
def test_non_finite_and_beyond_float32_are_refused_with_their_index(value: float) -> None:
    # 1e39 is finite as a double but infinite as float32: the model would answer inf or NaN.
    with pytest.raises(DataError, match=r"index \[1, 0\].*float32's range") as raised:
        to_array([[1.0], [value]], loc=("inputs",))
    assert list(raised.value.loc) == ["inputs"]


def test_largest_float32_is_kept() -> None:
    big = float(np.finfo(np.float32).max)
    assert to_array([[big]])[0, 0] == np.float32(big)


def test_strings_are_refused_with_one_clear_message() -> None:
    with pytest.raises(DataError) as raised:
        to_array([["a", "b"]])
    assert raised.value.message == ("expected numbers in nested lists (no strings, booleans "
                                    "or integers beyond 64 bits)")


def test_integers_stay_exact_and_fractions_are_refused() -> None:
    assert to_array([[1, 2**40]], integer=True).tolist() == [[1, 2**40]]
    assert to_array([[1, 2**40]], integer=True).dtype == np.int64
    with pytest.raises(DataError, match="expected integers"):
        to_array([[1.5]], integer=True)
    with pytest.raises(DataError, match="NaN"):
        to_array([[float("nan")]], integer=True)
