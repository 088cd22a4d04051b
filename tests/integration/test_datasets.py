"""Uploading datasets (JSON, CSV, NPZ), stored once by content, and training on them."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.integration.jobs import run
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

HEIGHTS_CSV = ("weight,target\n87,187\n81,174\n82,179\n92,192\n90,188\n61,160\n86,179\n66,168\n"
               "69,168\n69,174\n")


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def test_csv_upload_is_stored_once_and_trains(stack: Stack) -> None:
    with stack.client() as client:
        first = client.post("/v1/datasets", content=HEIGHTS_CSV,
                            headers={"content-type": "text/csv"})
        assert first.status_code == 201, first.text
        body = first.json()
        assert (body["n"], body["x_shape"], body["y_shape"]) == (10, [10, 1], [10, 1])
        again = client.post("/v1/datasets", content=HEIGHTS_CSV,
                            headers={"content-type": "text/csv"})
        assert again.status_code == 200 and again.json()["id"] == body["id"]
        assert client.get(f"/v1/datasets/{body['id']}").json()["n"] == 10
        job = run(client, {"name": "heights-csv", "model": {"input_shape": [1], "layers": [
            {"type": "dense", "units": 16, "activation": "relu"}, {"type": "dense", "units": 1}]},
            "training": {"optimizer": {"type": "adam", "lr": 0.05}, "loss": "mse",
                         "epochs": 20, "batch_size": 5, "standardize": True},
            "data": {"dataset_id": body["id"]}})
        assert job["progress"]["epoch"] == 20


def test_json_and_npz_uploads_with_y_columns(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post("/v1/datasets", json={"x": [[0, 0], [0, 1], [1, 0], [1, 1]],
                                                     "y": [0, 1, 1, 0]})
        assert response.status_code in (200, 201), response.text
        assert response.json()["x_shape"] == [4, 2]
        images = np.random.default_rng(0).random((6, 1, 4, 4)).astype(np.float32)
        response = client.post("/v1/datasets", content=_npz(x=images, y=np.arange(6) % 2),
                               headers={"content-type": "application/x-npz"})
        assert response.status_code == 201, response.text
        assert response.json()["x_shape"] == [6, 1, 4, 4]
        csv = "a,b,c,d\n1,2,3,4\n5,6,7,8\n"
        response = client.post("/v1/datasets", params={"y_columns": "c,d"}, content=csv,
                               headers={"content-type": "text/csv"})
        assert response.json()["x_shape"] == [2, 2] and response.json()["y_shape"] == [2, 2]


@pytest.mark.parametrize(("content", "content_type", "status", "words"), [
    ("a,b\n1,2\n", "text/csv", 422, "target"),
    ("x,target\n1,2\n3\n", "text/csv", 422, "line 3"),
    ("x,target\n1,abc\n", "text/csv", 422, "not a number"),
    ('{"x": [[1], [2, 3]], "y": [1, 2]}', "application/json", 422, "ragged"),
    ('{"x": [[1]], "y": [1], "z": 1}', "application/json", 422, "object"),
    ("not a zip", "application/x-npz", 422, "NPZ"),
    ('{"x": [[1], [2]], "y": 5}', "application/json", 422, "array of rows"),  # was a 500
    ('{"x": [[]], "y": [1]}', "application/json", 422, "empty axis"),
    ("x=1", "application/x-www-form-urlencoded", 415, "content type"),
])
def test_bad_uploads_say_what_is_wrong(stack: Stack, content: str, content_type: str,
                                       status: int, words: str) -> None:
    with stack.client() as client:
        response = client.post("/v1/datasets", content=content,
                               headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]


def test_pickled_npz_is_refused(stack: Stack) -> None:
    with stack.client() as client:
        objects = np.array([{"evil": 1}], dtype=object)
        response = client.post("/v1/datasets", content=_npz(x=objects, y=objects),
                               headers={"content-type": "application/x-npz"})
    assert response.status_code == 422


def test_a_dataset_that_does_not_fit_the_model_is_422_before_queueing(stack: Stack) -> None:
    with stack.client() as client:
        dataset = client.post("/v1/datasets", content=HEIGHTS_CSV,
                              headers={"content-type": "text/csv"}).json()
        response = client.post("/v1/jobs", json={
            "model": {"input_shape": [3], "layers": [{"type": "dense", "units": 1}]},
            "training": {"optimizer": "sgd", "loss": "mse"},
            "data": {"dataset_id": dataset["id"]}})
        assert response.status_code == 422
        assert response.json()["error"]["loc"] == ["data", "dataset_id"]
        assert "[10, 1]" in response.json()["error"]["message"]
        missing = client.post("/v1/jobs", json={
            "model": {"input_shape": [1], "layers": [{"type": "dense", "units": 1}]},
            "training": {"optimizer": "sgd", "loss": "mse"}, "data": {"dataset_id": "nope"}})
        assert missing.status_code == 422
        assert missing.json()["error"]["loc"] == ["data", "dataset_id"]
