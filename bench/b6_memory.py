"""B6: memory. The API's RSS while it predicts from many different trained models (its model
cache is bounded by TAAS_PREDICT_CACHE_SIZE), and a worker's RSS as it runs jobs (B5's batch
of tiny jobs, or a batch of its own when B5 did not run). Flat after warm-up is the goal."""

from __future__ import annotations

import time

from bench import b5_scale
from bench.common import BenchResult, Config
from bench.load import MiB, Request, new_client, rss_bytes
from bench.stack import CACHE_SIZE, Services

GROWTH_LIMIT = 0.02  # "flat": at most 2 % above the RSS after warm-up


def _flat(result: BenchResult, what: str, warm: int, end: int) -> None:
    growth = (end - warm) / warm
    result.target(f"{what}: RSS growth after warm-up", growth * 100, "%",
                  f"<= {GROWTH_LIMIT * 100:g}", growth <= GROWTH_LIMIT)


def _worker(config: Config, services: Services, result: BenchResult) -> None:
    batches: dict[int, list[b5_scale.Batch]] = services.shared.get("b5_batches") or {
        1: [b5_scale.batch(config, services, 1, config.pick(200, 6), reads=False)]}
    for workers, runs in sorted(batches.items()):
        for b in runs:
            case = f"worker, {workers} process{'es' if workers > 1 else ''}"
            done = [d for d, _ in b.rss]
            warm_at = next((i for i, d in enumerate(done) if d >= len(b.ids) // 5), 0)
            warm, end = b.rss[warm_at][1], b.rss[-1][1]
            result.add(case, f"after {done[warm_at]} jobs (warm)", "RSS", "MiB", [warm / MiB])
            result.add(case, f"after {done[-1]} jobs", "RSS", "MiB", [end / MiB])
            jobs = max(done[-1] - done[warm_at], 1)
            result.add(case, "growth per 100 jobs", "RSS", "MiB",
                       [(end - warm) / MiB * 100 / jobs])
            _flat(result, case, warm, end)
            series = ", ".join(f"{d}: {r / MiB:.0f}" for d, r in b.rss)
            result.notes.append(f"{case}, RSS MiB by jobs done: {series}")


def _api(config: Config, services: Services, result: BenchResult) -> None:
    n = config.pick(100, 12)
    ids: list[str] = list(services.shared.get("tiny_jobs", []))[:n]
    if len(ids) < n:
        more = b5_scale.batch(config, services, services.workers or 1, n - len(ids),
                              first=50_000, reads=False)
        ids += more.ids
    stack = services.stack(workers=services.workers or 1)
    pid = stack.processes["api"].popen.pid
    requests = [Request.json("POST", f"{stack.api_url}/v1/jobs/{job_id}/predict",
                             {"inputs": [[80.0]]}) for job_id in ids]
    samples: list[tuple[int, int]] = [(0, rss_bytes(pid))]
    seconds: list[float] = []
    passes = config.pick(3, 2)
    with new_client() as client:
        for index in range(passes * n):
            begin = time.perf_counter()
            requests[index % n].send(client)
            seconds.append(time.perf_counter() - begin)
            if (index + 1) % 10 == 0 or index + 1 == passes * n:
                samples.append((index + 1, rss_bytes(pid)))
    case = f"API, {n} models, cache {CACHE_SIZE}"
    warm_at = next(i for i, (done, _) in enumerate(samples) if done >= min(2 * CACHE_SIZE, n))
    result.add(case, "before predictions", "RSS", "MiB", [samples[0][1] / MiB])
    warm, end = samples[warm_at][1], samples[-1][1]
    result.add(case, f"after {samples[warm_at][0]} predictions (warm)", "RSS", "MiB",
               [warm / MiB])
    result.add(case, f"after {samples[-1][0]} predictions ({passes} passes)", "RSS", "MiB",
               [end / MiB])
    result.add(case, "peak", "RSS", "MiB", [max(r for _, r in samples) / MiB])
    miss = seconds[n:] if n > CACHE_SIZE else seconds[:n]  # LRU smaller than n: all misses
    result.add(case, "predict, model not cached", "latency c=1", "ms",
               [s * 1000 for s in miss])
    _flat(result, case, warm, end)
    series = ", ".join(f"{d}: {r / MiB:.0f}" for d, r in samples[::max(1, len(samples) // 12)])
    result.notes.append(f"{case}, RSS MiB by predictions made: {series}")


def run(config: Config, services: Services) -> BenchResult:
    result = BenchResult("B6", "memory: RSS flat after warm-up")
    _worker(config, services, result)
    _api(config, services, result)
    result.notes.append("RSS = VmRSS from /proc of the process and its children (celery's "
                        "pool processes); warm-up: the first 20 % of the jobs, and the first "
                        f"{2 * CACHE_SIZE} predictions (twice the cache size)")
    return result
