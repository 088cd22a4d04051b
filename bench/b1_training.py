"""B1: training throughput of dlmodels' `fit`, as the worker runs it, against reference loops.

The dlmodels arm is the worker's path: `build_model` + `fit` with the worker's own
`ReportProgress` callback (progress and epoch rows to the job's row in Postgres, metrics to a
real `mlflow server` through `worker.tracking.Tracker`, batched every TAAS_PROGRESS_INTERVAL).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from bench import b1_loops
from bench.b1_loops import SEED, Case, Run
from bench.common import BenchResult, Config, by_round, paired_ratio
from bench.stack import Services
from dlmodels.builder import SpecModel, build_model
from dlmodels.callbacks import Callback, FitState
from dlmodels.spec import JobSpec

ARMS = ("dlmodels", "hand-written", "DataLoader", "Lightning")
ANCHOR = "hand-written"
THREADS = 1
LOSS_TOLERANCE = 1e-6  # relative: "the same final loss"


class EpochClock(Callback):
    """Runs after ReportProgress: an epoch's time includes the progress/MLflow writes."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.mark = 0.0

    def on_train_begin(self, state: FitState) -> None:
        self.mark = time.perf_counter()

    def on_epoch_end(self, state: FitState, epoch: int, logs: dict[str, float]) -> None:
        now = time.perf_counter()
        self.run.epoch_seconds.append(now - self.mark)
        self.run.final_loss = logs["loss"]
        self.mark = now


def _use_database(services: Services) -> None:
    """Point this process' api.db at the bench database (ReportProgress writes to it)."""
    from api import db, settings

    env = services.migrated_env()
    for key in ("TAAS_DATABASE_URL", "TAAS_MLFLOW_TRACKING_URI"):
        os.environ[key] = env[key]
    os.environ.pop("TAAS_PROGRESS_INTERVAL", None)  # the service's default
    settings.get_settings.cache_clear()
    db.reset()


def _running_job(name: str, epochs: int) -> str:
    """A job row in state `running`, attempt 1, as a claimed job has."""
    from api.db import session_scope
    from api.models import Job, JobStatus, new_id

    job_id = new_id()
    with session_scope() as session:
        session.add(Job(id=job_id, tenant="", name=name, status=JobStatus.running, queue="cpu",
                        spec={}, summary={}, epochs=epochs, attempt=1))
    return job_id


def _job_spec(case: Case) -> JobSpec:
    return JobSpec.model_validate({
        "name": "bench-b1",
        "model": {"input_shape": case.input_shape, "layers": case.layers},
        "training": {"optimizer": {"type": "adam", "lr": b1_loops.LR}, "loss": "cross_entropy",
                     "epochs": case.epochs, "batch_size": case.batch_size, "seed": SEED,
                     "device": "cpu"},
        "data": {"dataset_id": "bench-synthetic"}})


@contextmanager
def worker_callbacks(job_id: str, settings: Any) -> Iterator[tuple[Any, list[Callback]]]:
    """The tracker and the callbacks the worker's runner gives `fit` (and its heartbeat)."""
    from worker.callbacks import ReportProgress, SaveCheckpoints
    from worker.heartbeat import Heartbeat
    from worker.tracking import Tracker

    tracker = Tracker(tracking_uri=settings.mlflow_tracking_uri, experiment="taas-bench-b1",
                      timeout=settings.tracking_timeout)
    with Heartbeat(job_id, 1, settings.heartbeat_interval) as heartbeat, \
            ReportProgress(job_id=job_id, attempt=1, tracker=tracker, heartbeat=heartbeat,
                           interval=settings.progress_interval,
                           db_timeout=settings.heartbeat_timeout) as progress:
        checkpoints = SaveCheckpoints(progress=progress, interval=settings.checkpoint_interval)
        yield tracker, [progress, checkpoints]


def dlmodels_arm(case: Case, spec: JobSpec, initial: SpecModel) -> Run:
    from api.settings import get_settings
    from dlmodels.training import fit

    settings = get_settings()
    model = copy.deepcopy(initial)
    job_id = _running_job(spec.name or "bench-b1", case.epochs)
    run = Run()
    with worker_callbacks(job_id, settings) as (tracker, callbacks):
        tracker.start(job_id=job_id, name=f"b1 {case.name}", tenant="", attempt=1, spec=spec,
                      summary_text="")
        begin = time.perf_counter()
        fit(model, case.x, case.y, spec.training, callbacks=[*callbacks, EpochClock(run)],
            device=torch.device("cpu"))
        run.call_seconds = time.perf_counter() - begin
        tracker.end("FINISHED")
    return run


def _arms(case: Case) -> dict[str, Callable[[], dict[str, Any]]]:
    spec = _job_spec(case)
    torch.manual_seed(SEED)
    initial = build_model(spec.model, loss="cross_entropy")
    n = len(case.x)

    def sample(fn: Callable[[], Run]) -> Callable[[], dict[str, Any]]:
        def call() -> dict[str, Any]:
            run = fn()
            return {"epoch": [n / s for s in run.epoch_seconds],
                    "call": n * case.epochs / run.call_seconds, "loss": run.final_loss}
        return call

    def plain(loop: Callable[[nn.Module, Case], Run]) -> Callable[[], Run]:
        return lambda: loop(copy.deepcopy(initial.layers), case)

    return {"dlmodels": sample(lambda: dlmodels_arm(case, spec, initial)),
            "hand-written": sample(plain(b1_loops.hand_written)),
            "DataLoader": sample(plain(b1_loops.dataloader)),
            "Lightning": sample(plain(b1_loops.lightning))}


def run(config: Config, services: Services) -> BenchResult:
    result = BenchResult("B1", "training throughput (samples/s per epoch)")
    # One torch thread: the worker's share with 2 processes on 2 cores. Two threads stall on
    # OpenMP barriers whenever another process takes a core (this machine is shared).
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _run(config, services, result)
    finally:
        torch.set_num_threads(threads)


def _run(config: Config, services: Services, result: BenchResult) -> BenchResult:
    _use_database(services)
    rounds = config.pick(5, 1)
    for case in b1_loops.cases(config.smoke):
        # Warm-up: one short epoch of every arm (an eighth of the data), not timed.
        for warm in _arms(replace(case, x=case.x[:len(case.x) // 8],
                                  y=case.y[:len(case.y) // 8], epochs=1)).values():
            warm()
        samples, each = by_round(_arms(case), rounds)
        per_epoch = result.add_arms(case.name, samples, "epoch", "samples/s", ANCHOR)
        result.add_arms(case.name, samples, "call", "samples/s", ANCHOR)
        losses = result.add_arms(case.name, samples, "loss", "nats", ANCHOR)
        ours = per_epoch["dlmodels"]
        paired = paired_ratio(each, "dlmodels", ANCHOR, "epoch")
        result.add_stat(case.name, "dlmodels / hand-written, per round", "epoch ratio", "x",
                        paired)
        result.target(f"{case.name}: dlmodels / hand-written (median of per-round ratios)",
                      paired.median, "x", ">= 0.97", paired.median >= 0.97)
        for other in ("DataLoader", "Lightning"):
            speedup = ours.median / per_epoch[other].median
            result.target(f"{case.name}: dlmodels / {other}", speedup, "x", "> 1",
                          speedup > 1)
        base = losses[ANCHOR].median
        for arm in ("dlmodels", "DataLoader", "Lightning"):
            diff = max(abs(v - base) for v in samples[arm]["loss"]) / max(abs(base), 1e-12)
            result.target(f"{case.name}: final loss {arm} vs hand-written", diff, "rel. diff",
                          f"<= {LOSS_TOLERANCE:g}", diff <= LOSS_TOLERANCE)
    result.notes.append(
        "the 0.97 target is judged on the median of per-round ratios (each round runs the "
        "arms back to back); the pooled medians' ratio is in the 'vs anchor' column; "
        f"{rounds} interleaved rounds after a warm-up (one epoch on 1/8 of the data); "
        "'epoch' = samples / each epoch's time after setup (dlmodels' includes the worker "
        "callbacks' writes to Postgres and MLflow); "
        "'call' = samples x epochs / the whole call; torch threads = "
        f"{torch.get_num_threads()}")
    return result
