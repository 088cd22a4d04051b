"""A sweep's MLflow parent run, from the controller (the calls themselves are in
worker.tracking). MLflow being down never stops a sweep: the run is started at a later turn,
and trials started meanwhile are simply not nested."""

from __future__ import annotations

import logging

from api.models import Sweep, SweepStatus
from api.settings import Settings
from api.sweep_schemas import SweepCreate
from worker.tracking import SweepTracker, Tracker, TrackingUnavailable

log = logging.getLogger("taas.sweeps")

TIMEOUT = 5.0  # seconds a controller turn waits for MLflow
END_STATUS = {SweepStatus.succeeded: "FINISHED", SweepStatus.failed: "FAILED",
              SweepStatus.cancelled: "KILLED"}


def _tracker(settings: Settings) -> SweepTracker:
    return SweepTracker(Tracker(tracking_uri=settings.mlflow_tracking_uri,
                                experiment=settings.mlflow_experiment, timeout=TIMEOUT))


def start(sweep: Sweep, body: SweepCreate, settings: Settings) -> None:
    search = {"parameters": {path: spec.model_dump(exclude_defaults=True)
                             for path, spec in body.parameters.items()},
              "objective": body.objective.model_dump(), "sampler": body.sampler.model_dump(),
              "pruner": body.pruner.model_dump(), "max_trials": body.max_trials,
              "max_parallel": body.max_parallel}
    try:
        sweep.mlflow_experiment_id, sweep.mlflow_run_id = _tracker(settings).start(
            sweep_id=sweep.id, name=sweep.name, tenant=sweep.tenant, search=search)
    except TrackingUnavailable as error:
        log.warning("sweep %s: no MLflow parent run yet: %s", sweep.id, error)


def log_best(sweep: Sweep, value: float, *, trials: int, settings: Settings) -> None:
    if sweep.mlflow_run_id is None:
        return
    try:
        _tracker(settings).log_best(sweep.mlflow_run_id, sweep.objective["metric"], value,
                                    trials)
    except TrackingUnavailable as error:
        log.warning("sweep %s: best value not sent to MLflow: %s", sweep.id, error)


def end(sweep: Sweep, settings: Settings) -> None:
    if sweep.mlflow_run_id is None:
        return
    try:
        _tracker(settings).end(sweep.mlflow_run_id, END_STATUS[SweepStatus(sweep.status)])
    except TrackingUnavailable as error:
        log.warning("sweep %s: MLflow run not ended: %s", sweep.id, error)
