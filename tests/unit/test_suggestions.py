"""A new user's typos get help: "did you mean" for misspelt fields and names everywhere, the
line and column of a JSON syntax error, and a browser opening the API lands on its docs."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.schemas import HEIGHTS_EXAMPLE
from dlmodels.layers.base import LAYERS
from dlmodels.registry import UnknownNameError, did_you_mean
from tests.unit.test_openapi import make_client  # noqa: F401 (a fixture)

SPEC = {k: HEIGHTS_EXAMPLE[k] for k in ("model", "training", "data")}


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:  # noqa: F811
    return make_client()


@pytest.mark.parametrize(("change", "loc", "suggestion"), [
    (lambda b: b["model"]["layers"][0].update(activaton="relu"),
     ["model", "layers", 0, "activaton"], "activation"),
    (lambda b: b["model"]["layers"][0].update(type="densse"), ["model", "layers", 0], "dense"),
    (lambda b: b["model"]["layers"][0].update(activation="rleu"),
     ["model", "layers", 0, "activation"], "relu"),
    (lambda b: b["training"].update(loss="cross_entropi"), ["training", "loss"],
     "cross_entropy"),
    (lambda b: b["training"].update(optimizer={"type": "adamm"}), ["training", "optimizer"],
     "adam"),
    (lambda b: b["training"].update(epcohs=3), ["training", "epcohs"], "epochs"),
    (lambda b: b["training"]["optimizer"].update(learning_rate=0.1),
     ["training", "optimizer", "learning_rate"], None),
    (lambda b: b["training"]["optimizer"].update(lrr=0.1), ["training", "optimizer", "lrr"],
     "lr"),
    (lambda b: b.update(trainng={}), ["trainng"], "training"),
    (lambda b: b["data"]["inline"].update(xx=[]), ["data", "inline", "xx"], "x"),
    (lambda b: b.update(data={"builtin": {"name": "iriss"}}), ["data", "builtin", "name"],
     "iris"),
])
def test_misspelt_fields_and_names_get_a_suggestion(client: TestClient, change: Any,
                                                    loc: list[Any],
                                                    suggestion: str | None) -> None:
    body = copy.deepcopy(SPEC)
    change(body)
    error = client.post("/v1/specs/validate", json=body).json()["error"]
    assert error["loc"] == loc
    if suggestion is None:
        assert "did you mean" not in error["message"]
    else:
        assert f"(did you mean '{suggestion}'?)" in error["message"], error["message"]


def test_other_bodies_get_suggestions_too(client: TestClient) -> None:
    response = client.post("/v1/webhooks", json={"url": "https://93.184.216.34/", "event": []})
    assert "(did you mean 'events'?)" in response.json()["error"]["message"]
    response = client.post("/v1/jobs/x/evaluate", json={"x": [[1]], "yy": [[1]]})
    assert "(did you mean 'y'?)" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/specs/validate", "/v1/jobs"])
def test_a_json_syntax_error_says_where(client: TestClient, path: str) -> None:
    raw = b'{"model": {"input_shape": [1],\n  "layers": [}'
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["line"], error["column"]) == (2, 14)
    assert "line 2, column 14" in error["message"] and error["loc"] == []


def test_a_json_syntax_error_in_a_predict_body_says_where(client: TestClient) -> None:
    response = client.post("/v1/jobs/x/predict", content=b'{"inputs": [[1.0]]',
                           headers={"content-type": "application/json"})
    error = response.json()["error"]
    assert error["line"] == 1 and "line 1" in error["message"], error


def test_a_browser_is_sent_to_the_docs(client: TestClient) -> None:
    for path in ("/", "/v1"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 307 and response.headers["location"] == "/docs"
    error = client.get("/v1/nothing").json()["error"]
    assert error["type"] == "not_found" and "/docs" in error["message"]
    assert json.loads(client.get("/v1/jobs/nope").text)["error"]["message"] == "no job 'nope'"


def test_registry_names_suggest_the_closest() -> None:
    with pytest.raises(UnknownNameError, match=r"did you mean 'conv2d'\?"):
        LAYERS.get("conv2")
    assert did_you_mean("zzz", ["dense"]) == ""
