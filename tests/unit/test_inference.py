"""The Open Inference Protocol's tensors (api.services.inference) and the model directory's
name -> job lookups (api.directory), without a server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from api.directory import ModelDirectory
from api.errors import InvalidInput
from api.services import inference
from api.services.models import Entry, check_alias


def _json(tensor: dict[str, object], **request: object) -> bytes:
    return json.dumps({"inputs": [{"name": "input", **tensor}], **request}).encode()


def test_json_tensors_flat_or_nested_in_any_numeric_datatype() -> None:
    for data in ([1, 2, 3, 4, 5, 6], [[1, 2, 3], [4, 5, 6]]):
        for datatype, dtype in (("FP32", np.float32), ("FP64", np.float64),
                                ("INT32", np.int32), ("INT64", np.int64)):
            request, x = inference.parse(_json({"shape": [2, 3], "datatype": datatype,
                                                "data": data}), None)
            assert x.dtype == dtype and x.tolist() == [[1, 2, 3], [4, 5, 6]]
            assert request.id is None


def test_binary_tensor_data_after_the_json_header() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = _json({"shape": [2, 3], "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}, id="r1")
    request, parsed = inference.parse(header + x.tobytes(), str(len(header)))
    assert request.id == "r1" and np.array_equal(parsed, x)
    for bad in (header + x.tobytes()[:-4], header + x.tobytes() + b"\0"):
        with pytest.raises(InvalidInput, match="binary_data_size"):
            inference.parse(bad, str(len(header)))
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length"):
        inference.parse(header, str(len(header) + 1))


@pytest.mark.parametrize("tensor, message", [
    ({"shape": [2, 3], "datatype": "FP32", "data": [1, 2]}, "2 values for shape"),
    ({"shape": [1], "datatype": "BYTES", "data": ["a"]}, "datatype 'BYTES'"),
    ({"shape": [-1], "datatype": "FP32", "data": [1]}, "negative"),
    ({"shape": [1], "datatype": "INT32", "data": ["x"]}, "not INT32 values"),
])
def test_bad_tensors_are_refused_with_what_is_wrong(tensor: dict[str, object],
                                                    message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        inference.parse(_json(tensor), None)


def test_the_one_input_must_be_named_input_and_the_body_must_parse() -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                   "data": [1]}]}).encode()
    with pytest.raises(InvalidInput, match="one input, 'input'"):
        inference.parse(body, None)
    with pytest.raises(InvalidInput, match="inputs"):
        inference.parse(b'{"inputs": []}', None)
    with pytest.raises(InvalidInput):
        inference.parse(b'{"inputs": [{"name": "input"}], "extra": 1}', None)


def test_responses_in_json_or_binary_per_output() -> None:
    results = {"output": np.array([[0.25, 0.75]], np.float32), "label": np.array([1])}
    request, _ = inference.parse(_json({"shape": [1], "datatype": "FP32", "data": [0]},
                                       id="q"), None)
    body, header = inference.response(request, name="m", version=3, results=results)
    assert header is None
    assert json.loads(body) == {"model_name": "m", "model_version": "3", "id": "q", "outputs": [
        {"name": "output", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]},
        {"name": "label", "datatype": "INT64", "shape": [1], "data": [1]}]}
    request, _ = inference.parse(_json({"shape": [1], "datatype": "FP32", "data": [0]},
                                       outputs=[{"name": "output",
                                                 "parameters": {"binary_data": True}}]), None)
    body, header = inference.response(request, name="m", version=3, results=results)
    assert header is not None
    described = json.loads(body[:header])["outputs"]
    assert described == [{"name": "output", "datatype": "FP32", "shape": [1, 2],
                          "parameters": {"binary_data_size": 8}}]
    assert np.frombuffer(body[header:], np.float32).tolist() == [0.25, 0.75]
    request, _ = inference.parse(_json({"shape": [1], "datatype": "FP32", "data": [0]},
                                       outputs=[{"name": "nope"}]), None)
    with pytest.raises(InvalidInput, match="no output 'nope'"):
        inference.response(request, name="m", version=3, results=results)


def test_directory_resolves_latest_versions_and_aliases_from_memory() -> None:
    directory = ModelDirectory(interval=1)
    directory._entries = {("a", "m"): Entry({1: "job1", 2: "job2"}, {"champion": 1})}
    directory._generation = 1
    assert directory.lookup("a", "m", None) == ("job2", 2)
    assert directory.lookup("a", "m", 1) == ("job1", 1)
    assert directory.lookup("a", "m", "champion") == ("job1", 1)
    for tenant, name, ref in (("b", "m", None), ("a", "m", 3), ("a", "m", 0), ("a", "m", "nope"),
                              ("a", "x", None)):
        assert directory.lookup(tenant, name, ref) is None
    assert directory.versions("a", "m") == [1, 2] and directory.versions("b", "m") == []


@pytest.mark.parametrize("alias", ["7", "latest", "V2", "-x", "", "a/b", "x" * 201])
def test_aliases_that_would_clash_are_refused(alias: str) -> None:
    with pytest.raises(InvalidInput):
        check_alias(alias)
    check_alias("champion-2_b")
