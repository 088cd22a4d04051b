"""B3: predictions of one trained MLP (784-256-128-64-10), 1 row and 64 rows, over HTTP on
loopback: the service's POST /v1/jobs/{id}/predict (JSON body, and the same inputs as a .npy
body), the same by model name and by alias (/v1/models/...), the Open Inference Protocol's
V2 infer (JSON tensors, and binary tensor data), the same app's GET /healthz, MLflow's own
`mlflow models serve --env-manager local` of the same registered model, and the in-process
forward pass (`dlmodels.training.predict`, what the route calls, one torch thread as the API)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx
import numpy as np
import psycopg
import torch

from api.bodies import NPY_TYPE
from bench.common import ArmFn, BenchResult, Config, interleave
from bench.jobs import mlp784, run_job
from bench.load import Client, Request, latencies, new_client, throughput
from bench.stack import Services
from dlmodels.builder import SpecModel, build_model
from dlmodels.serialize import load_weights
from dlmodels.spec import JobSpec
from dlmodels.training import predict
from tests.integration.stack import Process, free_port, start, wait_until
from tests.npy import npy_bytes

NAME = "bench-b3-mlp"
THREADS = 4  # client threads for throughput


def start_model_server(services: Services, model_uri: str) -> tuple[Process, str]:
    port = free_port()
    env = {**services.migrated_env(), "MLFLOW_TRACKING_URI": services.mlflow_url}
    proc = start("mlflow-models-serve", ["mlflow", "models", "serve", "-m", model_uri,
                                         "--env-manager", "local", "-h", "127.0.0.1", "-p",
                                         str(port)], env, services.workdir / "logs")
    services.extra.append(proc)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/ping").status_code == 200, 300,
                   "mlflow models serve", interval=0.2)
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"mlflow models serve did not start:\n{proc.tail()}") from None
    return proc, url


def _trained_model(services: Services, job_id: str, body: dict[str, Any]) -> SpecModel:
    """The job's model as the API builds it: the spec's model with the stored weights."""
    dsn = services.database().replace("+psycopg", "")
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT data FROM job_weights WHERE job_id = %s", (job_id,)).fetchone()
    if row is None:
        raise RuntimeError(f"job {job_id} has no stored weights")
    spec = JobSpec.model_validate(body)
    return load_weights(build_model(spec.model, loss=spec.training.loss), bytes(row[0]))


def _in_process(model: SpecModel, x: np.ndarray, n: int) -> list[float]:
    out = []
    for _ in range(n):
        begin = time.perf_counter()
        predict(model, torch.from_numpy(x), "cross_entropy")
        out.append(time.perf_counter() - begin)
    return out


def _latency_arm(request: Request, client: Client, n: int) -> ArmFn:
    return lambda: {"lat": latencies(request, n, client)}


def _in_process_arm(model: SpecModel, x: np.ndarray, n: int) -> ArmFn:
    return lambda: {"lat": _in_process(model, x, n)}


def _throughput_arm(request: Request, duration: float) -> ArmFn:
    return lambda: {"rps": throughput(request, THREADS, duration)}


def run(config: Config, services: Services) -> BenchResult:
    result = BenchResult("B3", "predict latency and throughput, one trained MLP")
    stack = services.stack(workers=1)
    with stack.client() as client:
        job = run_job(client, mlp784(NAME))
    server, mlflow_url = start_model_server(services, f"models:/{NAME}/1")
    model = _trained_model(services, job["id"], mlp784(NAME))
    # Pixel-like values with 4 decimals, sent as a client would write them (~6 KB per row).
    rows = np.round(np.random.default_rng(1).random((64, 784)), 4)
    inputs = {1: rows[:1], 64: rows[:64]}
    http: dict[str, Request] = {"healthz": Request("GET", f"{stack.api_url}/healthz")}
    for n_rows, x in inputs.items():
        payload = {"inputs": x.tolist()}
        url = f"{stack.api_url}/v1/jobs/{job['id']}/predict"
        http[f"predict {n_rows}"] = Request.json("POST", url, payload)
        http[f"predict npy {n_rows}"] = Request("POST", url, npy_bytes(x.astype(np.float32)),
                                                NPY_TYPE)
        http[f"mlflow serve {n_rows}"] = Request.json("POST", f"{mlflow_url}/invocations",
                                                      payload)
        models = f"{stack.api_url}/v1/models/{NAME}"
        http[f"by name {n_rows}"] = Request.json("POST", f"{models}/predict", payload)
        http[f"by alias {n_rows}"] = Request.json("POST", f"{models}/aliases/bench/predict",
                                                  payload)
        http.update(_v2_requests(f"{stack.api_url}/v2/models/{NAME}/infer", x, n_rows))
    with stack.client() as client:
        client.put(f"/v1/models/{NAME}/aliases/bench", json={"version": 1}).raise_for_status()
        time.sleep(1)  # the alias reaches the API's model directory
    _check_same_predictions(result, http)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    clients = {name: new_client() for name in http}
    per_call, rounds = config.pick(60, 10), config.pick(5, 1)
    duration, t_rounds = config.pick(1.5, 0.3), config.pick(3, 1)
    try:
        arms: dict[str, ArmFn] = {name: _latency_arm(req, clients[name], per_call)
                                  for name, req in http.items()}
        for n_rows, x in inputs.items():
            arms[f"in-process {n_rows}"] = _in_process_arm(model, x.astype(np.float32),
                                                           per_call)
        for name, req in http.items():  # warm-up: a few calls and a short burst of each
            latencies(req, 10, clients[name])
            throughput(req, THREADS, 0.2)
        lat = interleave(arms, rounds, warmup=0)
        thr = interleave({name: _throughput_arm(req, duration) for name, req in http.items()},
                         t_rounds, warmup=0)
    finally:
        torch.set_num_threads(threads)
        for c in clients.values():
            c.close()
        server.stop()
    ms = {arm: {"lat": [v * 1000 for v in m["lat"]]} for arm, m in lat.items()}
    for n_rows in inputs:
        case = f"{n_rows} row{'s' if n_rows > 1 else ''}"
        base = result.add(case, f"in-process {n_rows}", "latency c=1", "ms",
                          ms[f"in-process {n_rows}"]["lat"])
        ours = result.add(case, f"predict {n_rows}", "latency c=1", "ms",
                          ms[f"predict {n_rows}"]["lat"], base)
        result.add(case, f"mlflow serve {n_rows}", "latency c=1", "ms",
                   ms[f"mlflow serve {n_rows}"]["lat"], base)
        npy = result.add(case, f"predict npy {n_rows}", "latency c=1", "ms",
                         ms[f"predict npy {n_rows}"]["lat"], base)
        anchor = result.add(case, f"mlflow serve {n_rows}", f"throughput c={THREADS}", "req/s",
                            thr[f"mlflow serve {n_rows}"]["rps"])
        for arm, latency in ((f"predict {n_rows}", ours), (f"predict npy {n_rows}", npy)):
            what = arm.removesuffix(f" {n_rows}")
            over = latency.median - base.median
            result.target(f"{case}: {what} p50 - in-process p50", over, "ms", "< 1", over < 1)
            mine = result.add(case, arm, f"throughput c={THREADS}", "req/s", thr[arm]["rps"],
                              anchor)
            result.target(f"{case}: {what} throughput / mlflow serve", mine.ratio or 0, "x",
                          ">= 2", (mine.ratio or 0) >= 2)
    for n_rows in inputs:
        _by_name_and_v2(result, ms, thr, n_rows)
    _micro_batching(result, model, rows.astype(np.float32), per_call * rounds,
                    thr["predict 1"]["rps"])
    base = result.add("no body", "healthz", "latency c=1", "ms", ms["healthz"]["lat"])
    result.add("no body", "healthz", f"throughput c={THREADS}", "req/s", thr["healthz"]["rps"])
    result.notes.append(
        f"after a warm-up, latency: {rounds} interleaved rounds x {per_call} sequential calls, "
        "keep-alive; "
        f"throughput: {t_rounds} rounds x {duration:g} s with {THREADS} client threads "
        f"(bench.load.Client, same machine: the client shares the {os.cpu_count()} cores)")
    return result


def _micro_batching(result: BenchResult, model: SpecModel, rows: np.ndarray, n: int,
                    rps: list[float]) -> None:
    """The most micro-batching could save: THREADS concurrent 1-row requests answered by one
    THREADS-row forward pass instead of THREADS 1-row passes (no queueing cost counted)."""
    one, many = torch.from_numpy(rows[:1]), torch.from_numpy(rows[:THREADS])
    saved = []
    for _ in range(n):
        begin = time.perf_counter()
        for _ in range(THREADS):
            predict(model, one, "cross_entropy")
        separate = time.perf_counter() - begin
        begin = time.perf_counter()
        predict(model, many, "cross_entropy")
        saved.append((separate - (time.perf_counter() - begin)) / THREADS * 1000)
    gain = result.add("1 row", "micro-batching, best case", "forward time saved per request",
                      "ms", saved)
    per_request = 1000 / float(np.median(rps))  # ms of the server per 1-row request
    result.notes.append(
        f"micro-batching {THREADS} concurrent 1-row requests would save at most "
        f"{gain.median:.3f} ms of forward pass per request, {gain.median / per_request:.1%} of "
        f"the {per_request:.2f} ms each request costs at c={THREADS}; not built")


def _v2_requests(url: str, x: np.ndarray, n_rows: int) -> dict[str, Request]:
    """V2 infer of `x` as JSON tensors, and as binary tensor data in and out (tritonclient's
    default)."""
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    plain = Request.json("POST", url, {"inputs": [{**tensor, "data": x.tolist()}]})
    header = json.dumps({"inputs": [{**tensor, "parameters": {
        "binary_data_size": x.astype(np.float32).nbytes}}],
        "parameters": {"binary_data_output": True}}).encode()
    binary = Request("POST", url, header + x.astype(np.float32).tobytes(),
                     "application/octet-stream",
                     (("Inference-Header-Content-Length", str(len(header))),))
    return {f"v2 json {n_rows}": plain, f"v2 binary {n_rows}": binary}


def _by_name_and_v2(result: BenchResult, ms: dict[str, dict[str, list[float]]],
                    thr: dict[str, dict[str, list[float]]], n_rows: int) -> None:
    """By name and by alias against by job id (target: within 5%); V2 infer against /v1
    predict and mlflow serve."""
    case = f"{n_rows} row{'s' if n_rows > 1 else ''}"
    by_job = result.figure(case, f"predict {n_rows}", f"throughput c={THREADS}")
    job_lat = result.figure(case, f"predict {n_rows}", "latency c=1")
    for arm in (f"by name {n_rows}", f"by alias {n_rows}"):
        what = arm.removesuffix(f" {n_rows}")
        result.add(case, arm, "latency c=1", "ms", ms[arm]["lat"], job_lat)
        mine = result.add(case, arm, f"throughput c={THREADS}", "req/s", thr[arm]["rps"],
                          by_job)
        result.target(f"{case}: {what} throughput / by job id", mine.ratio or 0, "x",
                      ">= 0.95", (mine.ratio or 0) >= 0.95)
    mlflow = result.figure(case, f"mlflow serve {n_rows}", f"throughput c={THREADS}")
    for arm in (f"v2 json {n_rows}", f"v2 binary {n_rows}"):
        result.add(case, arm, "latency c=1", "ms", ms[arm]["lat"], job_lat)
        result.add(case, arm, f"throughput c={THREADS}", "req/s", thr[arm]["rps"], by_job)
        result.add(case, f"{arm} vs mlflow serve", f"throughput c={THREADS}", "req/s",
                   thr[arm]["rps"], mlflow)


def _check_same_predictions(result: BenchResult, http: dict[str, Request]) -> None:
    with new_client() as client:
        ours = np.array(http["predict 64"].send(client).json()["predictions"])
        npy = np.array(http["predict npy 64"].send(client).json()["predictions"])
        theirs = http["mlflow serve 64"].send(client).json()["predictions"]
        by_alias = http["by alias 64"].send(client).json()
        v2 = http["v2 json 64"].send(client).json()["outputs"][0]
    diff = float(np.max(np.abs(ours - np.array(theirs))))
    if not np.array_equal(ours, npy):
        raise RuntimeError("predict answered differently for the same inputs as JSON and .npy")
    if by_alias["predictions"] != ours.tolist() or \
            not np.array_equal(np.array(v2["data"]).reshape(v2["shape"]), ours):
        raise RuntimeError("predict by alias or V2 infer answered differently from by job id")
    result.notes.append(f"API and mlflow serve predictions agree to {diff:.1e} (max abs diff); "
                        "JSON and .npy bodies give identical predictions")
