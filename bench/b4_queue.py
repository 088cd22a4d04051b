"""B4: queue latency, from sending POST /v1/jobs until the job is running (the worker's claim
stamps `started_at`), against a raw Redis LPUSH -> BRPOP wake-up on the same Redis."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import redis

from bench.common import BenchResult, Config, interleave
from bench.jobs import heights, stamp, submit, wait
from bench.stack import Services


def redis_round_trips(url: str, n: int) -> list[float]:
    """Seconds from LPUSH to the blocked BRPOP in another thread returning it."""
    key = f"taas-bench:b4:{uuid.uuid4().hex}"
    pusher, popper = redis.Redis.from_url(url), redis.Redis.from_url(url)
    out: list[float] = []

    def consume() -> None:
        for _ in range(n):
            found = popper.brpop([key], timeout=10)
            if found is None:
                return
            out.append(time.perf_counter() - float(found[1]))

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    for _ in range(n):
        time.sleep(0.002)  # the consumer is blocked in BRPOP again
        pusher.lpush(key, repr(time.perf_counter()))
    thread.join(30)
    pusher.delete(key)
    pusher.close()
    popper.close()
    if len(out) != n:
        raise RuntimeError(f"Redis round trip lost {n - len(out)} of {n} messages")
    return out


def run(config: Config, services: Services) -> BenchResult:
    result = BenchResult("B4", "queue latency: POST until running")
    stack = services.stack(workers=1)
    assert services.redis_url is not None
    client = stack.client()
    body = heights(epochs=1, name="bench-b4")

    def service() -> dict[str, Any]:
        posted = time.time()
        begin = time.perf_counter()
        job = submit(client, body)
        accepted = time.perf_counter() - begin
        job = wait(client, job["id"], interval=0.02)  # the next job finds the worker idle
        if job["status"] != "succeeded":
            raise RuntimeError(f"job ended {job['status']}: {job.get('error')}")
        return {"running": stamp(job["started_at"]) - posted, "post": accepted}

    per_call = config.pick(20, 5)
    rounds = config.pick(12, 3)
    try:
        samples = interleave({"service": service, "redis": lambda: {
            "rtt": redis_round_trips(services.redis_url or "", per_call)}}, rounds, warmup=1)
    finally:
        client.close()
    case = "tiny job, idle worker"
    anchor = result.add(case, "Redis LPUSH->BRPOP", "round trip", "ms",
                        [v * 1000 for v in samples["redis"]["rtt"]])
    ours = result.add(case, "service", "POST to running", "ms",
                      [v * 1000 for v in samples["service"]["running"]], anchor)
    result.add(case, "service", "POST answered (202)", "ms",
               [v * 1000 for v in samples["service"]["post"]], anchor)
    result.target("POST to running p50", ours.median, "ms", "< 50", ours.median < 50)
    result.notes.append(f"{rounds} interleaved rounds after 1 warm-up ({per_call} Redis round "
                        "trips per round); 'running' is the job's started_at minus the client's "
                        "clock when it sent the POST (one machine, one clock)")
    return result
