"""B2: the heights job end to end (POST, then poll GET until succeeded) on Postgres + Redis +
MLflow server, against the same training in-process (`build_model` + `fit`); the difference
is what the service adds."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from bench.common import BenchResult, Config, interleave
from bench.jobs import heights, stamp, submit, wait
from bench.stack import Services
from dlmodels.builder import build_model
from dlmodels.spec import JobSpec
from dlmodels.training import fit

POLL = 0.01  # seconds between status reads while waiting


def in_process(spec: JobSpec, x: np.ndarray, y: np.ndarray) -> float:
    begin = time.perf_counter()
    if spec.training.seed is not None:
        torch.manual_seed(spec.training.seed)
    model = build_model(spec.model, loss=spec.training.loss,
                        standardize=spec.training.standardize)
    fit(model, x, y, spec.training, device=torch.device("cpu"))
    return time.perf_counter() - begin


def run(config: Config, services: Services) -> BenchResult:
    result = BenchResult("B2", "a tiny job end to end (heights, 100 epochs)")
    stack = services.stack(workers=1)
    torch.set_num_threads(os.cpu_count() or 1)  # the worker's: cores / 1 process
    body = heights(epochs=100, name="bench-b2-heights")
    spec = JobSpec.model_validate(body)
    x = np.asarray(body["data"]["inline"]["x"], dtype=np.float32)
    y = np.asarray(body["data"]["inline"]["y"], dtype=np.float32)
    client = stack.client()

    def service() -> dict[str, Any]:
        posted = time.time()
        begin = time.perf_counter()
        job = submit(client, body)
        accepted = time.perf_counter() - begin
        job = wait(client, job["id"], interval=POLL)
        total = time.perf_counter() - begin
        if job["status"] != "succeeded":
            raise RuntimeError(f"job ended {job['status']}: {job.get('error')}")
        started, finished = stamp(job["started_at"]), stamp(job["finished_at"])
        return {"e2e": total, "post": accepted, "queue": started - posted,
                "run": finished - started, "seen": posted + total - finished}

    def local() -> dict[str, Any]:
        return {"inproc": in_process(spec, x, y)}

    rounds = config.pick(8, 1)
    try:
        samples = interleave({"service": service, "in-process": local}, rounds, warmup=1)
    finally:
        client.close()
    case = "heights 100 epochs"
    inproc = result.add(case, "in-process", "train", "s", samples["in-process"]["inproc"])
    e2e = samples["service"]["e2e"]
    result.add(case, "service", "POST until succeeded", "s", e2e, inproc)
    parts = [("post", "POST answered"), ("queue", "POST to running (started_at)"),
             ("run", "running to finished (worker)"), ("seen", "finished to seen by poll")]
    for key, label in parts:
        result.add(case, "service", label, "s", samples["service"][key])
    overhead = [a - b for a, b in zip(e2e, samples["in-process"]["inproc"], strict=True)]
    stat = result.add(case, "service - in-process", "overhead", "s", overhead)
    result.target("overhead p50 (end to end - in-process)", stat.median, "s", "< 1",
                  stat.median < 1)
    result.notes.append(f"{rounds} interleaved rounds after 1 warm-up; overhead paired per "
                        f"round; status polled every {POLL * 1000:g} ms; 1 worker process")
    return result
