"""The HTTP contract: errors with loc, listing, pagination, health, OpenAPI docs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.integration.jobs import HEIGHTS, run, spec, submit, wait
from tests.integration.stack import Stack
from tests.npy import npy_bytes

pytestmark = pytest.mark.integration


def _error(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"type", "message"}
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(("change", "loc", "words"), [
    (lambda b: b["model"]["layers"][0].update(units=-1), ["model", "layers", 0, "units"],
     "greater than 0"),
    (lambda b: b["model"]["layers"].insert(0, {"type": "conv2d", "filters": 4, "kernel_size": 3}),
     ["model", "layers", 0], "[C, H, W]"),
    (lambda b: b["model"]["layers"][1].update(colour="red"), ["model", "layers", 1, "colour"],
     "Extra inputs"),
    (lambda b: b["model"]["layers"].append({"type": "dense2", "units": 1}),
     ["model", "layers", 3], "dense2"),
    (lambda b: b["training"].update(loss="cross_entropy"), ["training", "loss"], "[1]"),
    (lambda b: b["data"]["inline"].update(x=[[1, 2]] * 10), ["data", "inline"], "[10, 2]"),
    (lambda b: b["data"]["inline"].update(y=[[1]] * 9), ["data", "inline"], "9"),
])
def test_a_bad_spec_is_422_with_loc_and_nothing_is_queued(stack: Stack, change, loc, words) -> None:  # type: ignore[no-untyped-def]
    body = spec(HEIGHTS, name="bad")
    change(body)
    with stack.client() as client:
        before = client.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
        error = _error(client.post("/v1/jobs", json=body), 422)
        assert error["loc"] == loc
        assert words in error["message"]
        after = client.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
        assert len(after) == len(before)


def test_unknown_layer_type_names_the_known_ones(stack: Stack) -> None:
    body = spec(HEIGHTS)
    body["model"]["layers"][0] = {"type": "densse", "units": 3}
    with stack.client() as client:
        error = _error(client.post("/v1/jobs", json=body), 422)
    assert "densse" in error["message"] and "'dense'" in error["message"]
    assert "'lstm'" in error["message"]


@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict:  # type: ignore[type-arg]
    with stack.client() as client:
        return run(client, spec(HEIGHTS, name="heights-predict", training={
            **HEIGHTS["training"], "epochs": 5}))


@pytest.mark.parametrize(("raw", "words"), [
    ('{"inputs": [80]}', "[1]"),
    ('{"inputs": [[80, 1]]}', "[1, 2]"),
    ('{"inputs": [[80], [1, 2]]}', "ragged"),
    ('{"inputs": [[NaN]]}', "NaN"),
    ('{"inputs": [[Infinity]]}', "infinite"),
    ('{"inputs": [[1e999]]}', "infinite"),
    ('{"inputs": [[1e39]]}', "float32's range"),
    ('{"inputs": [["a"]]}', "numbers"),
    ('{"inputs": [[[80]]]}', "[1, 1, 1]"),
])
def test_bad_predict_inputs_are_422_with_loc(stack: Stack, trained: dict, raw: str,  # type: ignore[type-arg]
                                             words: str) -> None:
    with stack.client() as client:
        response = client.post(f"/v1/jobs/{trained['id']}/predict", content=raw,
                               headers={"content-type": "application/json"})
    error = _error(response, 422)
    assert error["loc"] == ["inputs"]
    assert words in error["message"]


def test_predict_body_needs_inputs(stack: Stack, trained: dict) -> None:  # type: ignore[type-arg]
    with stack.client() as client:
        error = _error(client.post(f"/v1/jobs/{trained['id']}/predict", json={"x": [[1]]}), 422)
    assert error["loc"] in (["inputs"], ["x"])


NPY = {"content-type": "application/x-npy"}


@pytest.mark.parametrize("rows", [[[80.0], [65.0]], [[70.0]] * 300], ids=["2 rows", "300 rows"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, ">f4"])
def test_predict_takes_a_npy_body_and_answers_as_for_json(  # type: ignore[no-untyped-def]
        stack: Stack, trained: dict, rows, dtype) -> None:  # type: ignore[type-arg]
    url = f"/v1/jobs/{trained['id']}/predict"
    with stack.client() as client:
        as_json = client.post(url, json={"inputs": rows})
        as_npy = client.post(url, content=npy_bytes(np.array(rows, dtype=dtype)), headers=NPY)
    assert as_json.status_code == as_npy.status_code == 200, as_npy.text
    assert as_npy.json() == as_json.json()
    assert len(as_npy.json()["predictions"]) == len(rows)


@pytest.mark.parametrize(("body", "loc", "words"), [
    (b"not numpy", ["body"], "not a readable .npy"),
    (npy_bytes(np.array([[True]])), ["body"], "holds bool"),
    (npy_bytes(np.array([[80.0]]))[:-2], ["body"], "bytes of data follow"),
    (npy_bytes(np.array([80.0])), ["inputs"], "[1]"),
    (npy_bytes(np.array([[np.nan]])), ["inputs"], "NaN"),
    (npy_bytes(np.array([[80.0, 1.0]])), ["inputs"], "[1, 2]"),
])
def test_a_bad_npy_body_is_422_with_loc(stack: Stack, trained: dict, body: bytes,  # type: ignore[type-arg]
                                        loc: list[str], words: str) -> None:
    with stack.client() as client:
        response = client.post(f"/v1/jobs/{trained['id']}/predict", content=body, headers=NPY)
    error = _error(response, 422)
    assert error["loc"] == loc
    assert words in error["message"]


def test_predict_answers_alike_before_and_after_the_model_is_in_memory(stack: Stack) -> None:
    # The first predict loads the model through the route; later ones are answered from
    # memory by api.fast_predict, which hands any bad body back to the route.
    bad = [b'{"inputs": [[80, 1]]}', b'{"inputs": [[80]], "x": 1}', b"{",
           npy_bytes(np.array([[np.inf]]))]
    good = {"inputs": [[80.0], [65.0]]}
    with stack.client() as client:
        job = run(client, spec(HEIGHTS, name="predict-paths", training={
            **HEIGHTS["training"], "epochs": 1}))
        url = f"/v1/jobs/{job['id']}/predict"

        def answers() -> list[tuple[int, bytes]]:
            replies = [client.post(url, content=body, headers={
                "content-type": "application/x-npy" if body.startswith(b"\x93") else
                "application/json"}) for body in bad]
            replies.append(client.post(url, json=good))
            replies.append(client.post(url, content=iter([b'{"inputs": [[80.0],', b"[65.0]]}"]),
                                       headers={"content-type": "application/json"}))
            return [(r.status_code, r.content) for r in replies]

        first = answers()  # bad bodies first: the model is not loaded by those
        assert [status for status, _ in first] == [422, 422, 422, 422, 200, 200]
        assert first[-1] == first[-2]  # a chunked body goes to the route, same answer
        assert answers() == first == answers()


def test_only_predict_takes_npy_and_a_415_says_what_it_takes(stack: Stack) -> None:
    with stack.client() as client:
        error = _error(client.post("/v1/jobs", content=npy_bytes(np.zeros((1, 1))), headers=NPY),
                       415)
        assert "application/json" in error["message"]
        assert ".npy file" not in error["message"]
        error = _error(client.post("/v1/jobs/x/predict", content=b"1", headers={
            "content-type": "text/csv"}), 415)
    assert "application/x-npy" in error["message"]


def test_unknown_job_is_404_and_unknown_route_has_the_error_shape(stack: Stack) -> None:
    with stack.client() as client:
        assert _error(client.get("/v1/jobs/nope"), 404)["type"] == "not_found"
        assert _error(client.post("/v1/jobs/nope/predict", json={"inputs": [[1]]}), 404)
        assert _error(client.get("/v1/nothing-here"), 404)


def test_list_is_newest_first_with_status_filter_and_cursor_pages(stack: Stack) -> None:
    with stack.client() as client:
        ids = [submit(client, spec(HEIGHTS, name=f"list-{i}", training={
            **HEIGHTS["training"], "epochs": 1}))["id"] for i in range(3)]
        for job_id in ids:
            wait(client, job_id)
        first = client.get("/v1/jobs", params={"limit": 2}).json()
        assert [j["id"] for j in first["jobs"]] == ids[::-1][:2]
        second = client.get("/v1/jobs", params={"limit": 2, "cursor": first["next_cursor"]})
        assert second.json()["jobs"][0]["id"] == ids[0]
        succeeded = client.get("/v1/jobs", params={"status": "succeeded", "limit": 500}).json()
        assert all(j["status"] == "succeeded" for j in succeeded["jobs"])
        assert set(ids) <= {j["id"] for j in succeeded["jobs"]}
        assert _error(client.get("/v1/jobs", params={"status": "done"}), 422)["loc"] == [
            "query", "status"]
        assert _error(client.get("/v1/jobs", params={"cursor": "%%%"}), 422)


def test_health_and_readiness(stack: Stack) -> None:
    with stack.client() as client:
        assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
        ready = client.get("/readyz").json()
        assert ready == {"status": "ok", "checks": {"database": "ok", "broker": "ok",
                                                   "mlflow": "ok"}}


def test_validate_returns_the_summary(stack: Stack) -> None:
    with stack.client() as client:
        body = {k: HEIGHTS[k] for k in ("model", "training", "data")}
        summary = client.post("/v1/specs/validate", json=body).json()
        assert summary["total_params"] == 4353
        error = _error(client.post("/v1/specs/validate", json={"model": {
            "input_shape": [10], "layers": [{"type": "conv1d", "filters": 2,
                                             "kernel_size": 3}]}}), 422)
        assert error["loc"] == ["model", "layers", 0]


def test_openapi_documents_every_request_field_with_an_example(stack: Stack) -> None:
    with stack.client() as client:
        assert client.get("/docs").status_code == 200
        schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/metrics",
                 "/v1/jobs/{job_id}/predict", "/v1/specs/validate", "/healthz", "/readyz"):
        assert path in paths
    components = schema["components"]["schemas"]
    for name in ("JobCreate", "SpecCheck"):
        assert components[name].get("examples"), f"{name} has no example"
    # The predict body is parsed by the route itself (pydantic's JSON parser), so its schema
    # is inline, from api.schemas.PredictRequest.
    predict = paths["/v1/jobs/{job_id}/predict"]["post"]["requestBody"]
    assert predict["required"]
    assert predict["content"]["application/json"]["schema"]["examples"]
