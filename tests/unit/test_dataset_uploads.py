"""Uploads (POST /v1/datasets) of every format: whatever body shape arrives, the answer is the
arrays or an InvalidInput naming the field, never another exception (a 500)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.errors import InvalidInput
from api.services.datasets import parse_upload

JSON = "application/json"


def upload(body: Any, content_type: str = JSON) -> tuple[np.ndarray, np.ndarray]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_upload(content_type=content_type, body=raw, y_columns=None)[1]


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize(("body", "loc"), [
    ({"x": [[1.0], [2.0]], "y": 5}, ["y"]),            # the fuzzer's TypeError: y a number
    ({"x": 3, "y": [1, 2]}, ["x"]),
    ({"x": [], "y": []}, ["x"]),
    ({"x": [[]], "y": [1]}, ["x"]),
    ({"x": [[1], [2]], "y": [[], []]}, ["y"]),
    ({"x": [[1], [2]], "y": "ab"}, ["y"]),
    ({"x": [[1], [2]], "y": None}, ["y"]),
    ({"x": [[1], [2]], "y": {"a": 1}}, ["y"]),
    ({"x": [[1], [2]], "y": [True, False]}, ["y"]),
    ({"x": [[1], [2]], "y": [1, 2, 3]}, ["y"]),
    ({"x": [[1], [2, 3]], "y": [1, 2]}, ["x"]),
])
def test_json_bodies_of_the_wrong_shape_name_the_field(body: Any, loc: list[str]) -> None:
    with pytest.raises(InvalidInput) as raised:
        upload(body)
    assert raised.value.loc == loc, raised.value.message


@pytest.mark.parametrize(("arrays", "loc"), [
    ({"x": np.float32(1.0), "y": np.array([1.0])}, ["x"]),
    ({"x": np.ones((2, 1)), "y": np.float32(3.0)}, ["y"]),
    ({"x": np.ones((0, 3)), "y": np.ones(0)}, ["x"]),
    ({"x": np.ones((2, 1)), "y": np.array(["a", "b"])}, ["y"]),
])
def test_npz_bodies_of_the_wrong_shape_name_the_field(arrays: dict[str, np.ndarray],
                                                       loc: list[str]) -> None:
    with pytest.raises(InvalidInput) as raised:
        upload(npz(**arrays), "application/x-npz")
    assert raised.value.loc == loc, raised.value.message


def test_a_good_upload_of_each_format_gives_rows() -> None:
    x, y = upload({"x": [[1, 2], [3, 4]], "y": [0, 1]})
    assert x.shape == (2, 2) and y.shape == (2,)
    x, y = upload(b"a,b,target\n1,2,0\n3,4,1\n", "text/csv")
    assert x.shape == (2, 2) and y.shape == (2, 1)
    x, y = upload(npz(x=np.ones((3, 1, 2, 2)), y=np.arange(3)), "application/x-npz")
    assert x.shape == (3, 1, 2, 2) and y.shape == (3,)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner,
                                                                max_size=2),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(x=JSON_VALUES, y=JSON_VALUES)
def test_any_json_values_give_arrays_or_invalid_input(x: Any, y: Any) -> None:
    try:
        xs, ys = upload({"x": x, "y": y})
    except InvalidInput as error:
        assert error.loc in (["x"], ["y"], []), error.loc
        return
    assert xs.ndim >= 1 and len(xs) == len(ys) >= 1 and 0 not in xs.shape + ys.shape
