"""Prometheus metrics: `GET /metrics` in the text format (prometheus-client).

Two sources, one scrape:
- this API process's own counters and histograms (HTTP requests by route template, latency,
  predictions by model and version, model cache hits and loads), kept in memory;
- the jobs' side (jobs by status, queue depth, training durations and epochs, failures by
  error.type), read from the database at scrape time. The database already holds every job's
  times, epochs and errors, written by the workers, so every API process reports the same,
  complete numbers without Prometheus' multiprocess mode or an endpoint per worker.

Several API processes each count their own requests: scrape each (one per container).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.db import read
from api.fast_predict import MODEL_PREDICT_PATH, PREDICT_PATH
from api.middleware import ASGIApp, Message, Receive, Scope, Send
from api.models import FINAL_STATES, Job, JobStatus, utcnow
from api.services.predict import ModelCache

# Predictions take from ~0.2 ms; status reads ~1 ms; submissions tens of ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
DURATION_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)


class Metrics:
    def __init__(self, cache: ModelCache) -> None:
        self._predictions: dict[tuple[str, str], Any] = {}
        self.registry = CollectorRegistry()
        self.requests = Counter("taas_http_requests", "HTTP requests answered, by route "
                                "template.", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("taas_http_request_duration_seconds", "Time to answer an HTTP "
                                 "request, by route template.", ["method", "route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.predictions = Counter("taas_predictions", "Prediction requests answered, by model "
                                   "name and version (version empty: by job id).",
                                   ["model", "version"], registry=self.registry)
        self.registry.register(CacheCollector(cache))
        self.registry.register(JobsCollector())

    def predicted(self, state: dict[str, Any]) -> None:
        """Count the prediction a request answered (the routes and api.fast_predict name it
        in the request state as `prediction`: (model, version))."""
        model, version = state["prediction"]
        key = (model, version)
        counter = self._predictions.get(key)
        if counter is None:
            counter = self._predictions[key] = self.predictions.labels(model, version)
        counter.inc()


class CacheCollector(Collector):
    def __init__(self, cache: ModelCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("taas_model_cache_hits", "Predictions whose model was in "
                                  "this process's memory.", value=self.cache.hits)
        yield CounterMetricFamily("taas_model_cache_loads", "Models loaded from the database "
                                  "into this process's memory (cache misses).",
                                  value=self.cache.puts)


class JobsCollector(Collector):
    """The jobs' metrics, from the database at scrape time."""

    def collect(self) -> Iterator[Metric]:
        yield from read(_job_metrics)


def _job_metrics(session: Session) -> list[Metric]:
    by_status = GaugeMetricFamily("taas_jobs", "Jobs by status.", labels=["status"])
    counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    for status in JobStatus:
        by_status.add_metric([status.value], counts.get(status, 0))
    depth = GaugeMetricFamily("taas_queue_depth", "Jobs queued and not yet running, by queue.",
                              labels=["queue"])
    queued = dict(session.execute(select(Job.queue, func.count()).where(
        Job.status == JobStatus.queued).group_by(Job.queue)).all())
    for queue in sorted({"cpu", "gpu", *queued}):
        depth.add_metric([queue], queued.get(queue, 0))
    failures = CounterMetricFamily("taas_job_failures", "Failed jobs by error.type.",
                                   labels=["error_type"])
    for error_type, count in session.execute(select(Job.error_type, func.count()).where(
            Job.status == JobStatus.failed).group_by(Job.error_type).order_by(Job.error_type)):
        failures.add_metric([error_type or "unknown"], count)
    return [by_status, depth, failures, *_training(session)]


def _training(session: Session) -> list[Metric]:
    """Durations of finished jobs (a histogram by final status), the epochs they trained, and
    the running jobs' current speed."""
    durations = {status: [0] * len(DURATION_BUCKETS) + [0] for status in FINAL_STATES}
    sums = dict.fromkeys(FINAL_STATES, 0.0)
    epochs = dict.fromkeys(FINAL_STATES, 0)
    for status, started, finished, done in session.execute(select(
            Job.status, Job.started_at, Job.finished_at, Job.progress_epoch).where(
            Job.status.in_(FINAL_STATES), Job.started_at.is_not(None),
            Job.finished_at.is_not(None))):
        if started is None or finished is None:
            continue
        seconds = max(0.0, (finished - started).total_seconds())
        state = JobStatus(status)
        durations[state][_bucket(seconds)] += 1
        sums[state] += seconds
        epochs[state] += done
    histogram = _duration_histogram(durations, sums)
    trained = CounterMetricFamily("taas_job_epochs", "Epochs trained by finished jobs, by "
                                  "final status (divide by taas_job_duration_seconds_sum for "
                                  "epochs per second).", labels=["status"])
    for state in sorted(FINAL_STATES):
        trained.add_metric([state.value], epochs[state])
    speed = GaugeMetricFamily("taas_running_epochs_per_second", "Epochs per second of the "
                              "running jobs together (epochs so far / time since start).")
    now, total = utcnow(), 0.0
    for started, done in session.execute(select(Job.started_at, Job.progress_epoch).where(
            Job.status == JobStatus.running)):
        if started is not None:
            total += done / max(1e-3, (now - started).total_seconds())
    speed.add_metric([], total)
    return [histogram, trained, speed]


def _bucket(seconds: float) -> int:
    return next((i for i, bound in enumerate(DURATION_BUCKETS) if seconds <= bound),
                len(DURATION_BUCKETS))


def _duration_histogram(durations: dict[JobStatus, list[int]],
                        sums: dict[JobStatus, float]) -> Metric:
    from prometheus_client.core import HistogramMetricFamily

    family = HistogramMetricFamily("taas_job_duration_seconds", "Run time of finished jobs "
                                   "(start to end), by final status.", labels=["status"])
    for state in sorted(durations):
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, DURATION_BUCKETS), "+Inf"), durations[state],
                                strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        family.add_metric([state.value], buckets, sums[state])
    return family


class HttpMetrics:
    """Counts and times every HTTP request by its route template (never the raw path). The
    outermost layer, so the request guard's refusals (401, 413, 415, 429) count too."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: Any) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes
        self._labelled: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        begin, status = time.perf_counter(), 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            state = scope.get("state", {})
            if status == 200 and "prediction" in state:
                self.metrics.predicted(state)
            counter, histogram = self._series(scope["method"], self._template(scope), status)
            counter.inc()
            histogram.observe(time.perf_counter() - begin)

    def _series(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        key = (method, route, status)
        found = self._labelled.get(key)
        if found is None:  # label lookups cost more than the increments: done once each
            found = (self.metrics.requests.labels(method, route, str(status)),
                     self.metrics.latency.labels(method, route))
            self._labelled[key] = found
        return found

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            return str(route.path)
        path = scope["path"]
        if PREDICT_PATH.fullmatch(path):  # answered by api.fast_predict, before routing
            return "/v1/jobs/{job_id}/predict"
        match = MODEL_PREDICT_PATH.fullmatch(path)
        if match is not None:
            return "/v1/models/{name}" + ("/versions/{version}" if match["version"] else
                                          "/aliases/{alias}" if match["alias"] else "") + \
                "/predict"
        for candidate in self.routes:  # refused before routing (401, 413, 415, 429)
            if candidate.path_regex.match(path):
                return str(candidate.path)
        return "unmatched"
