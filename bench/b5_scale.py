"""B5: scale on this machine. N tiny jobs submitted at once, with 1 and with 2 worker processes
(`celery worker --concurrency 1|2`): jobs/s, and no job lost. While they run, GET
/v1/jobs/{id} throughput against the same app's GET /healthz, in alternating windows.

`batch` is shared with B6, which reads the worker's RSS samples taken here."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from bench.common import BenchResult, Config
from bench.jobs import FINAL, run_job, stamp, tiny
from bench.load import Request, rss_bytes, throughput
from bench.stack import Services

READ_THREADS = 4
SUBMIT_THREADS = 8


@dataclass
class Batch:
    workers: int
    ids: list[str]
    seconds: float  # first POST sent -> last job finished
    submit_seconds: float
    statuses: dict[str, int]
    status_rps: list[float] = field(default_factory=list)
    healthz_rps: list[float] = field(default_factory=list)
    rss: list[tuple[int, int]] = field(default_factory=list)  # (jobs done, worker RSS bytes)

    @property
    def succeeded(self) -> int:
        return self.statuses.get("succeeded", 0)


def _counts(dsn: str, ids: list[str]) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT status, count(*) FROM jobs WHERE id = ANY(%s) "
                            "GROUP BY status", (ids,)).fetchall()
    return {status: count for status, count in rows}


def _reads(api: str, ids: list[str], done: threading.Event, batch: Batch, window: float,
           pairs: int) -> None:
    """Alternate windows of status reads and healthz reads while the jobs run."""
    status = lambda i: Request("GET", f"{api}/v1/jobs/{ids[i % len(ids)]}")  # noqa: E731
    healthz = Request("GET", f"{api}/healthz")
    for _ in range(pairs):
        if done.is_set():
            return
        batch.status_rps.append(throughput(status, READ_THREADS, window))
        batch.healthz_rps.append(throughput(healthz, READ_THREADS, window))


def batch(config: Config, services: Services, workers: int, n: int, first: int = 0,
          reads: bool = True) -> Batch:
    """Submit n tiny jobs at once to a fresh worker with `workers` processes, wait for all."""
    stack = services.stack(workers=workers, fresh=True)
    assert services.worker is not None
    worker_pid = services.worker.popen.pid
    # Warm-up: each pool process runs a job first.
    with stack.client() as client, ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda i: run_job(client, tiny(10_000 + i)), range(workers)))
    bodies = [tiny(first + i) for i in range(n)]
    dsn = services.database().replace("+psycopg", "")
    local = threading.local()

    def post(body: dict[str, Any]) -> str:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=stack.api_url, timeout=60)
        response = local.client.post("/v1/jobs", json=body)
        if response.status_code != 202:
            raise RuntimeError(f"POST /v1/jobs -> {response.status_code}: {response.text}")
        return str(response.json()["id"])

    began = time.time()
    with ThreadPoolExecutor(SUBMIT_THREADS) as pool:
        ids = list(pool.map(post, bodies))
    submitted = time.time() - began
    result = Batch(workers, ids, 0.0, submitted, {})
    done = threading.Event()
    reader = threading.Thread(target=_reads, args=(
        stack.api_url, ids, done, result, config.pick(1.0, 0.3), config.pick(5, 1)))
    if reads:
        reader.start()
    step = max(1, n // 10)
    deadline = time.monotonic() + config.pick(3.0, 6.0) * n + 60
    finished = 0
    while time.monotonic() < deadline:
        counts = _counts(dsn, ids)
        finished = sum(v for k, v in counts.items() if k in FINAL)
        if not result.rss or finished >= result.rss[-1][0] + step:
            result.rss.append((finished, rss_bytes(worker_pid)))
        if finished >= n:
            break
        time.sleep(0.1)
    done.set()
    if reads:
        reader.join()
    result.rss.append((finished, rss_bytes(worker_pid)))
    with httpx.Client(base_url=stack.api_url, timeout=60) as client:  # the API's view
        jobs = [client.get(f"/v1/jobs/{job_id}").json() for job_id in ids]
    for job in jobs:
        result.statuses[job["status"]] = result.statuses.get(job["status"], 0) + 1
    ends = [stamp(job["finished_at"]) for job in jobs if job.get("finished_at")]
    result.seconds = (max(ends) if ends else time.time()) - began
    return result


def run(config: Config, services: Services) -> BenchResult:
    result = BenchResult("B5", "scale: tiny jobs submitted at once, 1 and 2 worker processes")
    n = config.pick(200, 6)
    batches: dict[int, list[Batch]] = {1: [], 2: []}
    first = 0
    for _ in range(config.pick(1, 1)):  # rounds: 1 process, 2 processes, (1, 2, ...)
        for workers in (1, 2):
            batches[workers].append(batch(config, services, workers, n, first))
            first += n
    services.shared["b5_batches"] = batches
    services.shared["tiny_jobs"] = [i for b in batches[1] + batches[2] for i in b.ids]
    case = f"{n} tiny jobs"
    rates = {w: result.add(case, f"{w} worker process{'es' if w > 1 else ''}", "jobs/s",
                           "jobs/s", [len(b.ids) / b.seconds for b in batches[w]])
             for w in (1, 2)}
    rates[2].anchor, rates[2].ratio = rates[1].arm, rates[2].median / rates[1].median
    for w in (1, 2):
        result.add(case, rates[w].arm, "submit all (8 threads)", "s",
                   [b.submit_seconds for b in batches[w]])
        lost = [len(b.ids) - b.succeeded for b in batches[w]]
        result.add(case, rates[w].arm, "not succeeded", "jobs", [float(v) for v in lost])
        result.target(f"no job lost, {w} process(es)", max(lost), "jobs", "0", max(lost) == 0)
    result.target("jobs/s 2 processes / 1 process", rates[2].ratio, "x", "> 1",
                  rates[2].ratio > 1)
    every = [b for w in (1, 2) for b in batches[w]]
    status = [v for b in every for v in b.status_rps]
    healthz = [v for b in every for v in b.healthz_rps]
    if status and healthz:
        base = result.add("under load", "GET /healthz", f"throughput c={READ_THREADS}", "req/s",
                          healthz)
        ours = result.add("under load", "GET /v1/jobs/{id}", f"throughput c={READ_THREADS}",
                          "req/s", status, base)
        result.target("status reads / healthz under load", ours.ratio or 0, "x", ">= 0.5",
                       (ours.ratio or 0) >= 0.5)
    result.notes.append(
        "jobs/s = jobs / (first POST sent -> last finished_at); each worker ran one warm-up "
        "job per process first; reads: alternating windows (status, healthz) of "
        f"{config.pick(1.0, 0.3):g} s with {READ_THREADS} threads while the jobs ran")
    return result
