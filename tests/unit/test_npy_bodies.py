"""Predict's .npy bodies: read without parsing, and nothing in them trusted."""

from __future__ import annotations

import numpy as np
import pytest

from api.bodies import parse_npy
from api.errors import InvalidInput
from tests.npy import npy_bytes


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
    np.arange(6, dtype=">i4").reshape(2, 3, 1),
    np.zeros((0, 5), dtype=np.float16),
], ids=["float32", "fortran", "big-endian int", "empty"])
def test_numbers_come_back_as_saved(array: np.ndarray) -> None:
    parsed = parse_npy(npy_bytes(array))
    assert parsed.dtype == array.dtype and parsed.shape == array.shape
    assert np.array_equal(parsed, array)


def test_pickled_objects_are_refused_without_being_unpickled() -> None:
    class Bomb:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (pytest.fail, ("unpickled",))

    with pytest.raises(InvalidInput, match="holds object"):
        parse_npy(npy_bytes(np.array([Bomb()], dtype=object), allow_pickle=True))


def test_a_header_cannot_claim_more_data_than_the_body_holds() -> None:
    # A 150-byte body claiming 8 TB must be refused before anything is allocated.
    small = npy_bytes(np.zeros(1))
    huge = small.replace(b"(1,)", b"(1000000000000,)")
    with pytest.raises(InvalidInput, match="8000000000000 bytes"):
        parse_npy(huge)


@pytest.mark.parametrize(("body", "words"), [
    (b"", "not a readable .npy"),
    (b"\x93NUMPY\x09\x00", "not a readable .npy"),
    (npy_bytes(np.zeros(2))[:-1], "15 bytes of data"),
    (npy_bytes(np.zeros(2)) + b"\0", "17 bytes of data"),
    (npy_bytes(np.array(["a"])), "holds <U1"),
    (npy_bytes(np.array([1 + 2j])), "holds complex128"),
    (npy_bytes(np.float32(1)), "scalar"),
])
def test_unreadable_bodies_name_the_problem(body: bytes, words: str) -> None:
    with pytest.raises(InvalidInput, match=words) as raised:
        parse_npy(body)
    assert raised.value.loc == ["body"]
