"""B7: a 16-trial sweep of tiny jobs on 2 worker processes (Postgres + Redis + MLflow server).

The sweep's wall time (POST until it succeeded) against its trials' own run times (started_at
to finished_at) summed and divided by the worker processes: the time the sweep would take if
every worker slot ran trials back to back. What is left, per trial, is what a trial costs
beyond its training: the queue, the MLflow run, and the controller's turns. From it the same
cost of a lone job (POST until seen finished, minus its run) is taken, measured in the same run
as the anchor: the rest is the controller's overhead per trial.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.common import BenchResult, Config
from bench.jobs import heights, stamp, submit, wait
from bench.stack import Services

WORKERS = 2


def sweep_body(trials: int) -> dict[str, Any]:
    return {"name": "bench-b7", "base": heights(epochs=20, name="bench-b7-trial"),
            "parameters": {
                "model.layers.0.units": {"type": "int", "low": 8, "high": 64},
                "training.optimizer.lr": {"type": "float", "low": 1e-3, "high": 3e-2,
                                          "log": True}},
            "objective": {"metric": "loss"}, "sampler": {"type": "random", "seed": 0},
            "pruner": {"type": "none"}, "max_trials": trials, "max_parallel": WORKERS}


def lone_job_overhead(client: Any, rounds: int) -> list[float]:
    """POST until seen finished, minus the job's own run, for jobs run one at a time."""
    out = []
    for index in range(rounds + 1):  # the first is a warm-up
        begin = time.perf_counter()
        job = wait(client, submit(client, heights(epochs=20, name=f"bench-b7-lone-{index}"))
                   ["id"], interval=0.02)
        total = time.perf_counter() - begin
        if index:
            out.append(total - (stamp(job["finished_at"]) - stamp(job["started_at"])))
    return out


def run(config: Config, services: Services) -> BenchResult:
    result = BenchResult("B7", f"a sweep of tiny jobs on {WORKERS} workers")
    trials = config.pick(16, 4)
    stack = services.stack(workers=WORKERS)
    client = stack.client()
    try:
        lone = lone_job_overhead(client, config.pick(4, 1))
        begin = time.perf_counter()
        response = client.post("/v1/sweeps", json=sweep_body(trials))
        if response.status_code != 202:
            raise RuntimeError(f"POST /v1/sweeps -> {response.status_code}: {response.text}")
        sweep_id = response.json()["id"]
        while (sweep := client.get(f"/v1/sweeps/{sweep_id}").json())["status"] in (
                "queued", "running"):
            time.sleep(0.05)
        wall = time.perf_counter() - begin
        if sweep["status"] != "succeeded":
            raise RuntimeError(f"sweep ended {sweep['status']}: {sweep}")
        jobs = client.get("/v1/jobs", params={"sweep_id": sweep_id, "limit": 500}).json()["jobs"]
    finally:
        client.close()
    runs = [stamp(job["finished_at"]) - stamp(job["started_at"]) for job in jobs]
    case = f"{trials} trials, heights 20 epochs"
    ideal = result.add(case, f"sum(run) / {WORKERS}", "trials back to back", "s",
                       [sum(runs) / WORKERS])
    result.add(case, "sweep", "POST until succeeded", "s", [wall], ideal)
    per_trial = (wall * WORKERS - sum(runs)) / trials
    result.add(case, "sweep", "worker-slot time per trial beyond its run", "s", [per_trial])
    lone_fig = result.add(case, "lone job", "POST until seen finished, beyond its run", "s",
                          lone)
    controller = per_trial - lone_fig.median
    result.add(case, "sweep - lone job", "controller overhead per trial", "s", [controller])
    result.target("controller overhead per trial", controller, "s", "< 0.3", controller < 0.3)
    result.notes.append(f"one sweep of {trials} trials (random sampler, no pruner, "
                        f"max_parallel {WORKERS}); trial run p50 "
                        f"{statistics.median(runs):.2f} s; lone-job anchor: "
                        f"{len(lone)} jobs after 1 warm-up, same stack")
    return result
