"""POST /v1/jobs/{id}/evaluate: Keras' evaluate, equal to training's validation metrics on the
same data, with predict's input checks."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris

from dlmodels.training import split
from tests.integration.jobs import HEIGHTS, run, spec, submit
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

X = np.array(HEIGHTS["data"]["inline"]["x"], dtype=np.float32)
Y = np.array(HEIGHTS["data"]["inline"]["y"], dtype=np.float32)
REGRESSION = spec(HEIGHTS, name="heights-evaluate", training={
    **HEIGHTS["training"], "epochs": 30, "validation_split": 0.3, "standardize": True,
    "metrics": ["mae", "r2"]})


def _npz(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def _assert_validation_metrics(answer: dict[str, Any], job: dict[str, Any], samples: int) -> None:
    assert answer["samples"] == samples
    names = [k for k in answer if k != "samples"]
    assert sorted(names) == sorted(k[4:] for k in job["metrics"] if k.startswith("val_"))
    for name in names:
        assert answer[name] == pytest.approx(job["metrics"][f"val_{name}"], rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def regression(stack: Stack) -> dict[str, Any]:
    with stack.client() as client:
        return run(client, REGRESSION)


def test_evaluate_on_the_validation_split_equals_the_last_validation_metrics(
        stack: Stack, regression: dict[str, Any]) -> None:
    _, val = split(len(X), 0.3, seed=0)
    x_val, y_val = X[val], Y[val]
    url = f"/v1/jobs/{regression['id']}/evaluate"
    with stack.client() as client:
        as_json = client.post(url, json={"x": x_val.tolist(), "y": y_val.tolist()})
        assert as_json.status_code == 200, as_json.text
        _assert_validation_metrics(as_json.json(), regression, len(val))
        as_npz = client.post(url, content=_npz(x_val, y_val),
                             headers={"content-type": "application/x-npz"})
        assert as_npz.status_code == 200, as_npz.text
        assert as_npz.json() == as_json.json()
        uploaded = client.post("/v1/datasets", json={"x": x_val.tolist(), "y": y_val.tolist()})
        assert uploaded.status_code in (200, 201), uploaded.text
        by_id = client.post(url, json={"dataset_id": uploaded.json()["id"]})
        assert by_id.status_code == 200, by_id.text
        assert by_id.json() == as_json.json()


def test_classification_metrics_match_too(stack: Stack) -> None:
    x, y = load_iris(return_X_y=True)
    body = {"name": "iris-evaluate",
            "model": {"input_shape": [4], "layers": [
                {"type": "dense", "units": 16, "activation": "relu"},
                {"type": "dense", "units": 3, "activation": "softmax"}]},
            "training": {"optimizer": {"type": "adam", "lr": 0.01}, "loss": "cross_entropy",
                         "epochs": 15, "batch_size": 16, "seed": 0, "standardize": True,
                         "validation_split": 0.2, "metrics": ["accuracy", "f1"]},
            "data": {"inline": {"x": x.tolist(), "y": y.tolist()}}}
    _, val = split(len(x), 0.2, seed=0, labels=y.astype(np.int64))
    with stack.client() as client:
        job = run(client, body)
        answer = client.post(f"/v1/jobs/{job['id']}/evaluate",
                             json={"x": x[val].tolist(), "y": y[val].tolist()})
    assert answer.status_code == 200, answer.text
    _assert_validation_metrics(answer.json(), job, len(val))


@pytest.mark.parametrize(("body", "loc", "words"), [
    ({"x": [80], "y": [1]}, ["x"], "[1]"),
    ({"x": [[80, 1]], "y": [[1]]}, ["x"], "[1, 2]"),
    ({"x": [[80], [81]], "y": [[1]]}, ["y"], "2 samples"),
    ({"x": [[80]], "y": [[1, 2]]}, ["y"], "outputs"),
    ('{"x": [[NaN]], "y": [[1]]}', ["x"], "NaN"),
    ({"x": [[80]], "y": [["a"]]}, ["y"], "numbers"),
    ({"x": [[80]]}, [], "x and y"),
    ({"x": [[80]], "y": [[1]], "dataset_id": "abc"}, [], "not both"),
    ({"dataset_id": "nope"}, ["dataset_id"], "nope"),
    ({"x": [[80]], "y": [[1]], "colour": 1}, ["colour"], "Extra"),
])
def test_bad_data_is_422_with_loc(stack: Stack, regression: dict[str, Any], body: Any,
                                  loc: list[Any], words: str) -> None:
    with stack.client() as client:
        response = client.post(f"/v1/jobs/{regression['id']}/evaluate",
                               content=body if isinstance(body, str) else json.dumps(body),
                               headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["loc"] == loc and words in error["message"], error


def test_only_succeeded_jobs_evaluate(stack: Stack, regression: dict[str, Any]) -> None:
    with stack.client() as client:
        long = submit(client, spec(HEIGHTS, training={**HEIGHTS["training"], "epochs": 100000}))
        client.post(f"/v1/jobs/{long['id']}/cancel")
        response = client.post(f"/v1/jobs/{long['id']}/evaluate",
                               json={"x": [[80]], "y": [[180]]})
        assert response.status_code == 409, response.text
        assert client.post("/v1/jobs/nope/evaluate", json={"x": [[80]], "y": [[1]]}) \
            .status_code == 404
        wrong_type = client.post(f"/v1/jobs/{regression['id']}/evaluate", content=b"80,180",
                                 headers={"content-type": "text/csv"})
        assert wrong_type.status_code == 415
        bad_npz = client.post(f"/v1/jobs/{regression['id']}/evaluate", content=b"not a zip",
                              headers={"content-type": "application/x-npz"})
        assert bad_npz.status_code == 422, bad_npz.text
