"""Models by name on the real stack (Postgres + Redis, auth on, MLflow behind a proxy the test
can cut): versions registered by succeeded jobs, aliases kept in step with MLflow's registry
(also across an MLflow outage), tenants' names apart, predictions by name, version and alias."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.integration.conftest import own_postgres_stack
from tests.integration.jobs import HEIGHTS, spec
from tests.integration.proxy import Proxy
from tests.integration.stack import (
    Stack,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.integration

KEYS = {"alice": "key-a", "bob": "key-b"}
QUICK = {**HEIGHTS["training"], "epochs": 5}
X = HEIGHTS["data"]["inline"]["x"]


@pytest.fixture(scope="module")
def mlflow_proxy(mlflow_server: str) -> Iterator[Proxy]:
    host, port = mlflow_server.rsplit("//", 1)[1].split(":")
    proxy = Proxy(host, int(port))
    proxy.start()
    yield proxy
    proxy.cut()


@pytest.fixture(scope="module")
def reg(mlflow_proxy: Proxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    mlflow_url = f"http://127.0.0.1:{mlflow_proxy.port}"
    with own_postgres_stack(workdir=tmp_path_factory.mktemp("models"), mlflow_url=mlflow_url,
                            env={"TAAS_API_KEYS": ",".join(f"{tenant}:{key}" for tenant, key
                                                           in KEYS.items()),
                                 # the reaper's round: alias syncs to MLflow
                                 "TAAS_HEARTBEAT_INTERVAL": "0.5"}) as built:
        yield built


def client(stack: Stack, tenant: str) -> httpx.Client:
    return stack.client(headers={"Authorization": f"Bearer {KEYS[tenant]}"})


def train(c: httpx.Client, **training: Any) -> dict[str, Any]:
    body = spec(name="heights", training={**QUICK, **training})
    job_id = c.post("/v1/jobs", json=body).json()["id"]
    job = wait_until(lambda: (j := c.get(f"/v1/jobs/{job_id}").json())["status"] in
                     ("succeeded", "failed", "cancelled") and j, 120, f"job {job_id}")
    assert job["status"] == "succeeded", job
    return dict(job)


@pytest.fixture(scope="module")
def trained(reg: Stack) -> dict[str, list[dict[str, Any]]]:
    """alice: two versions of `heights` (different seeds); bob: one of his own `heights`."""
    with client(reg, "alice") as alice, client(reg, "bob") as bob:
        return {"alice": [train(alice, seed=0), train(alice, seed=1, epochs=7)],
                "bob": [train(bob, seed=2)]}


def test_succeeded_jobs_register_versions_per_tenant(
        reg: Stack, trained: dict[str, list[dict[str, Any]]]) -> None:
    with client(reg, "alice") as alice, client(reg, "bob") as bob:
        assert alice.get("/v1/models").json() == [
            {"name": "heights", "latest_version": 2, "aliases": {}}]
        assert bob.get("/v1/models").json() == [
            {"name": "heights", "latest_version": 1, "aliases": {}}]
        model = alice.get("/v1/models/heights").json()
        assert [(v["version"], v["job_id"]) for v in model["versions"]] == [
            (1, trained["alice"][0]["id"]), (2, trained["alice"][1]["id"])]
        assert model["versions"][1]["metrics"] == trained["alice"][1]["metrics"]
        assert model["aliases"] == {} and model["mlflow_synced"] is True
        assert bob.get("/v1/models/nope").status_code == 404
        # bob has one version of his own heights: alice's version 2 is not his
        response = bob.put("/v1/models/heights/aliases/champion", json={"version": 2})
        assert response.status_code == 404, response.text
        assert response.json()["error"]["type"] == "not_found"


def mlflow_alias(reg: Stack, model: str, alias: str) -> str | None:
    try:
        found = MlflowClient(reg.mlflow_url).get_model_version_by_alias(model, alias)
    except Exception:  # MLflow answers RESOURCE_DOES_NOT_EXIST for an unset alias
        return None
    return str(found.run_id)


def test_aliases_reach_mlflow_and_survive_an_outage(
        reg: Stack, trained: dict[str, list[dict[str, Any]]], mlflow_proxy: Proxy) -> None:
    first, second = trained["alice"]
    with client(reg, "alice") as alice, client(reg, "bob") as bob:
        for bad in ("7", "latest", "v2", "-x"):
            response = alice.put(f"/v1/models/heights/aliases/{bad}", json={"version": 1})
            assert response.status_code == 422, (bad, response.text)
        assert alice.put("/v1/models/heights/aliases/champion",
                         json={"version": 3}).status_code == 404
        model = alice.put("/v1/models/heights/aliases/champion", json={"version": 1}).json()
        assert model["aliases"] == {"champion": 1}
        wait_until(lambda: alice.get("/v1/models/heights").json()["mlflow_synced"], 30,
                   "alias copied to MLflow")
        assert mlflow_alias(reg, "alice.heights", "champion") == first["mlflow_run_id"]
        assert bob.get("/v1/models/heights").json()["aliases"] == {}

        mlflow_proxy.cut()  # MLflow down: the alias moves here at once, MLflow follows later
        try:
            model = alice.put("/v1/models/heights/aliases/champion",
                              json={"version": 2}).json()
            assert model["aliases"] == {"champion": 2} and model["mlflow_synced"] is False
            time.sleep(2)  # several reaper rounds fail meanwhile
            assert alice.get("/v1/models/heights").json()["mlflow_synced"] is False
        finally:
            mlflow_proxy.start()
        wait_until(lambda: alice.get("/v1/models/heights").json()["mlflow_synced"], 30,
                   "alias copied to MLflow after the outage")
        assert mlflow_alias(reg, "alice.heights", "champion") == second["mlflow_run_id"]

        assert alice.delete("/v1/models/heights/aliases/champion").status_code == 204
        assert alice.delete("/v1/models/heights/aliases/champion").status_code == 404
        assert alice.get("/v1/models").json()[0]["aliases"] == {}
        wait_until(lambda: alice.get("/v1/models/heights").json()["mlflow_synced"], 30,
                   "alias removed from MLflow")
        assert mlflow_alias(reg, "alice.heights", "champion") is None


def test_predict_by_name_version_and_alias(
        reg: Stack, trained: dict[str, list[dict[str, Any]]]) -> None:
    first, second = trained["alice"]
    body = {"inputs": X[:3]}
    with client(reg, "alice") as alice, client(reg, "bob") as bob:
        by_job = [alice.post(f"/v1/jobs/{job['id']}/predict", json=body).json()
                  for job in (first, second)]
        assert by_job[0] != by_job[1]
        for _ in range(2):  # the first call loads the model, the second is the hot path
            latest = alice.post("/v1/models/heights/predict", json=body)
            assert latest.status_code == 200, latest.text
            assert latest.json() == {**by_job[1], "model": "heights", "version": 2}
            one = alice.post("/v1/models/heights/versions/1/predict", json=body).json()
            assert one == {**by_job[0], "model": "heights", "version": 1}
        assert alice.put("/v1/models/heights/aliases/staging",
                         json={"version": 1}).status_code == 200
        staged = alice.post("/v1/models/heights/aliases/staging/predict", json=body).json()
        assert staged == {**by_job[0], "model": "heights", "version": 1}
        theirs = bob.post("/v1/models/heights/predict", json=body).json()
        assert theirs["version"] == 1 and theirs["predictions"] != by_job[0]["predictions"]
        for path in ("/v1/models/heights/versions/2/predict",
                     "/v1/models/heights/aliases/staging/predict",
                     "/v1/models/nope/predict"):
            response = bob.post(path, json=body)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["error"]["type"] == "not_found"
        bad = alice.post("/v1/models/heights/predict", json={"inputs": [[1, 2]]})
        assert bad.status_code == 422, bad.text


def test_moving_an_alias_under_load_fails_nothing_and_mixes_no_versions(
        reg: Stack, trained: dict[str, list[dict[str, Any]]]) -> None:
    """8 clients predict by alias through two API processes while the alias moves 1 -> 2 ->
    1 -> 2: every answer is 200, its predictions are exactly its version's, and answers sent
    a second after a move (and before the next) all come from the version moved to."""
    second_api = Stack(kind=reg.kind, api_url=f"http://127.0.0.1:{free_port()}", env=reg.env,
                       mlflow_url=reg.mlflow_url, workdir=reg.workdir / "api2")
    second_api.start_api()
    try:
        _move_under_load(reg, second_api)
    finally:
        second_api.stop()


def _move_under_load(reg: Stack, second_api: Stack) -> None:
    body = {"inputs": X[:2]}
    with client(reg, "alice") as alice:
        expected = {v: alice.post(f"/v1/models/heights/versions/{v}/predict",
                                  json=body).json()["predictions"] for v in (1, 2)}
        assert alice.put("/v1/models/heights/aliases/prod", json={"version": 1}).status_code \
            == 200
    time.sleep(1)
    answers: list[tuple[float, float, int, Any]] = []
    stop = threading.Event()

    def load(index: int) -> None:
        stack = reg if index % 2 else second_api
        with client(stack, "alice") as c:
            while not stop.is_set():
                sent = time.monotonic()
                response = c.post("/v1/models/heights/aliases/prod/predict", json=body)
                assert response.status_code == 200, response.text
                answer = response.json()
                answers.append((sent, time.monotonic(), answer["version"],
                                answer["predictions"]))

    moves: list[tuple[float, float, int]] = []  # (PUT sent, PUT answered, version)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(load, i) for i in range(8)]
        with client(reg, "alice") as alice:
            for version in (2, 1, 2):
                time.sleep(2)
                begin = time.monotonic()
                response = alice.put("/v1/models/heights/aliases/prod",
                                     json={"version": version})
                assert response.status_code == 200, response.text
                moves.append((begin, time.monotonic(), version))
            time.sleep(2)
        stop.set()
        for future in futures:
            future.result()  # re-raises a failed request
    assert len(answers) > 200, len(answers)
    for _, _, version, predictions in answers:
        assert predictions == expected[version], version
    bounds = [*[begin for begin, _, _ in moves[1:]], float("inf")]
    for (_, done, version), next_move in zip(moves, bounds, strict=True):
        settled = [v for sent, received, v, _ in answers
                   if sent > done + 1.0 and received < next_move]
        assert settled and set(settled) == {version}, (version, sorted(set(settled)))


# --- the Open Inference Protocol, with Triton's own client ----------------------------------

DIGITS_CNN = {
    "name": "digits",
    "model": {"input_shape": [1, 8, 8], "layers": [
        {"type": "conv2d", "filters": 8, "kernel_size": 3, "padding": "same",
         "activation": "relu"},
        {"type": "maxpool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 10, "activation": "softmax"}]},
    "training": {"optimizer": {"type": "adam", "lr": 0.01}, "loss": "cross_entropy",
                 "epochs": 2, "batch_size": 64, "standardize": True, "seed": 0},
    "data": {"builtin": "digits"},
}


def triton(reg: Stack) -> Any:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(reg.api_url.split("//", 1)[1])


def test_triton_client_health_metadata_and_infer_json_and_binary(
        reg: Stack, trained: dict[str, list[dict[str, Any]]]) -> None:
    import numpy as np
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    def alice_key() -> dict[str, str]:  # a new dict per call: the client adds headers to it
        return {"Authorization": f"Bearer {KEYS['alice']}"}

    with client(reg, "alice") as alice:
        digits_job = alice.post("/v1/jobs", json=DIGITS_CNN).json()["id"]
        wait_until(lambda: alice.get(f"/v1/jobs/{digits_job}").json()["status"] == "succeeded",
                   180, "digits CNN")
        from sklearn.datasets import load_digits

        images = load_digits().images[:5].reshape(5, 1, 8, 8).astype(np.float32)
        v1_digits = alice.post("/v1/models/digits/predict",
                               json={"inputs": images.tolist()}).json()
        heights = np.asarray(X[:4], dtype=np.float32)
        v1_heights = alice.post("/v1/models/heights/versions/1/predict",
                                json={"inputs": heights.tolist()}).json()
    server = triton(reg)
    assert server.is_server_live() and server.is_server_ready(headers=alice_key())
    assert "binary_tensor_data" in server.get_server_metadata(headers=alice_key())["extensions"]
    assert server.is_model_ready("digits", headers=alice_key())
    assert not server.is_model_ready("digits", headers={"Authorization": "Bearer key-b"})
    meta = server.get_model_metadata("digits", headers=alice_key())
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]},
                               {"name": "label", "datatype": "INT64", "shape": [-1]}]
    assert server.get_model_metadata("heights", "1", headers=alice_key())["versions"] == \
        ["1", "2"]
    cases = [("digits", "", images, v1_digits), ("heights", "1", heights, v1_heights)]
    for name, version, x, expected in cases:
        for binary in (True, False):
            tensor = httpclient.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            wanted = [httpclient.InferRequestedOutput("output", binary_data=binary)]
            result = server.infer(name, [tensor], model_version=version, request_id="r-7",
                                  outputs=wanted, headers=alice_key())
            got = result.get_output("output")
            assert result.get_response()["id"] == "r-7"
            assert np.array_equal(result.as_numpy("output"),
                                  np.asarray(expected["predictions"], dtype=np.float32)), \
                (name, binary, got)
        everything = server.infer(name, [tensor], model_version=version, headers=alice_key())
        if "labels" in expected:  # no outputs named: all, in binary (the client's default)
            assert everything.as_numpy("label").tolist() == expected["labels"]
    with pytest.raises(InferenceServerException, match="no model named"):
        server.infer("digits", [tensor], headers={"Authorization": "Bearer key-b"})
    server.close()


def test_v2_json_errors_auth_and_aliases(
        reg: Stack, trained: dict[str, list[dict[str, Any]]]) -> None:
    body = {"id": "q", "inputs": [{"name": "input", "shape": [2, 1], "datatype": "INT64",
                                   "data": [[X[0][0]], [X[1][0]]]}]}
    with client(reg, "alice") as alice, reg.client() as anonymous:
        one = alice.post("/v1/models/heights/versions/1/predict", json={"inputs": X[:2]}).json()
        alice.put("/v1/models/heights/aliases/blue", json={"version": 1})
        answer = alice.post("/v2/models/heights/versions/blue/infer", json=body)
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["id"] == "q" and result["model_version"] == "1"
        assert result["outputs"][0]["shape"] == [2, 1]
        assert result["outputs"][0]["data"] == [row[0] for row in one["predictions"]]
        for bad, status in (({**body, "inputs": [{**body["inputs"][0], "shape": [3, 1]}]}, 400),
                            ({**body, "inputs": [{**body["inputs"][0], "datatype": "STR"}]},
                             400), ({"inputs": []}, 400)):
            response = alice.post("/v2/models/heights/infer", json=bad)
            assert response.status_code == status, response.text
            assert isinstance(response.json()["error"], str)
        missing = alice.post("/v2/models/heights/versions/nope/infer", json=body)
        assert missing.status_code == 404 and "alias 'nope'" in missing.json()["error"]
        refused = anonymous.post("/v2/models/heights/infer", json=body)
        assert refused.status_code == 401 and isinstance(refused.json()["error"], str)
        assert anonymous.get("/v2/health/live").json() == {"live": True}


# --- Prometheus metrics -----------------------------------------------------------------------


def scrape(reg: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with reg.client() as anonymous:
        response = anonymous.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def test_metrics_count_a_known_sequence_exactly(
        reg: Stack, trained: dict[str, list[dict[str, Any]]]) -> None:
    def requests(route: str, method: str, status: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return ("taas_http_requests_total",
                (("method", method), ("route", route), ("status", status)))

    def predictions(model: str, version: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return ("taas_predictions_total", (("model", model), ("version", version)))

    body = {"inputs": X[:2]}
    first_job = trained["alice"][0]["id"]
    with client(reg, "alice") as alice:
        alice.post("/v1/models/heights/versions/1/predict", json=body)  # loaded if need be
        before = scrape(reg)
        for _ in range(3):
            assert alice.post("/v1/models/heights/versions/1/predict",
                              json=body).status_code == 200
        for _ in range(2):
            assert alice.post(f"/v1/jobs/{first_job}/predict", json=body).status_code == 200
        assert alice.post("/v2/models/heights/versions/1/infer", json={"inputs": [
            {"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [80]}]}
        ).status_code == 200
        assert alice.get("/v1/models/nope").status_code == 404
        jobs = [job for tenant in KEYS for job in
                client(reg, tenant).get("/v1/jobs", params={"limit": 500}).json()["jobs"]]
    with reg.client() as anonymous:
        assert anonymous.get("/v1/models").status_code == 401
    after = scrape(reg)

    def delta(key: tuple[str, tuple[tuple[str, str], ...]]) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta(requests("/v1/models/{name}/versions/{version}/predict", "POST", "200")) == 3
    assert delta(requests("/v1/jobs/{job_id}/predict", "POST", "200")) == 2
    assert delta(requests("/v2/models/{name}/versions/{version}/infer", "POST", "200")) == 1
    assert delta(requests("/v1/models/{name}", "GET", "404")) == 1
    assert delta(requests("/v1/models", "GET", "401")) == 1
    assert delta(("taas_http_request_duration_seconds_count", (
        ("method", "POST"), ("route", "/v1/models/{name}/versions/{version}/predict")))) == 3
    assert delta(predictions("heights", "1")) == 4  # 3 by version, 1 over V2
    assert delta(predictions("heights", "")) == 2   # by job id
    assert delta(("taas_model_cache_hits_total", ())) == 6
    assert delta(("taas_model_cache_loads_total", ())) == 0
    for status in ("succeeded", "failed", "queued", "running", "cancelled"):
        expected = sum(job["status"] == status for job in jobs)
        assert after[("taas_jobs", (("status", status),))] == expected, status
    assert after[("taas_queue_depth", (("queue", "cpu"),))] == 0
    assert after[("taas_job_duration_seconds_count", (("status", "succeeded"),))] == \
        sum(job["status"] == "succeeded" for job in jobs)
    assert after[("taas_job_epochs_total", (("status", "succeeded"),))] == sum(
        job["progress"]["epoch"] for job in jobs if job["status"] == "succeeded")
