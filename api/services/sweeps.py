"""Sweeps: create (check, store, create the study, start the controller), read, list, trials,
cancel. The controller that runs them is worker.sweep_controller."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api import studies
from api.errors import Conflict, NotFound, Unavailable
from api.lifecycle import job_status_changed
from api.models import Job, JobStatus, Sweep, SweepStatus, new_id, utcnow
from api.queue import dispatch_sweep_step
from api.services import models
from api.services.jobs import MODEL_TRAINING_VIEW
from api.services.paging import newest_first
from api.services.sweep_check import check_sweep, split_path
from api.services.sweep_lock import locked_sweep
from api.services.sweep_steps import notify_sweep_finished, request_step
from api.settings import Settings
from api.sweep_schemas import (
    Best,
    Objective,
    Promoted,
    SweepCreate,
    SweepOut,
    TrialCounts,
    TrialOut,
)

log = logging.getLogger("taas.sweeps")


def create_sweep(session: Session, *, body: SweepCreate, tenant: str,
                 settings: Settings) -> Sweep:
    """Check everything, store the sweep and its study, then give the controller its first
    turn. If the broker cannot take it, nothing stays stored (503), as for a job."""
    check_sweep(session, body=body, tenant=tenant, settings=settings)
    sweep_id = new_id()
    sweep = Sweep(id=sweep_id, tenant=tenant, name=body.name or f"sweep-{sweep_id[:8]}",
                  status=SweepStatus.queued, spec=body.model_dump(mode="json", exclude_unset=True),
                  objective=body.objective.model_dump(), max_trials=body.max_trials,
                  max_parallel=body.max_parallel, step_requested_at=utcnow())
    studies.create(sweep_id, body)
    session.add(sweep)
    session.commit()
    try:
        dispatch_sweep_step(sweep_id)
    except Exception as error:  # kombu raises many types for "broker unreachable"
        log.warning("broker unavailable, sweep %s not started: %s", sweep_id, error)
        session.delete(sweep)
        session.commit()
        studies.delete(sweep_id)
        raise Unavailable("the job queue (broker) is unreachable; nothing was stored, retry "
                          "shortly", headers={"Retry-After": "5"}) from error
    return sweep


def get_sweep(session: Session, *, sweep_id: str, tenant: str) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or sweep.tenant != tenant:
        raise NotFound(f"no sweep {sweep_id!r}")
    return sweep


def list_sweeps(session: Session, *, tenant: str, limit: int,
                cursor: str | None) -> tuple[list[Sweep], str | None]:
    """Newest first, paged like jobs."""
    return newest_first(session, select(Sweep).where(Sweep.tenant == tenant), Sweep,
                        limit=limit, cursor=cursor)


def trial_counts(session: Session, sweep_id: str) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).where(Job.sweep_id == sweep_id)
                           .group_by(Job.status)).all()
    return {str(status): int(count) for status, count in rows}


def sweep_out(session: Session, sweep: Sweep, settings: Settings) -> SweepOut:
    url = None
    if sweep.mlflow_run_id and sweep.mlflow_experiment_id:
        url = (f"{settings.mlflow_public_url}/#/experiments/{sweep.mlflow_experiment_id}"
               f"/runs/{sweep.mlflow_run_id}?{MODEL_TRAINING_VIEW}")  # as a job's link
    return SweepOut(id=sweep.id, name=sweep.name, status=SweepStatus(sweep.status).value,
                    trials=TrialCounts(**trial_counts(session, sweep.id)),
                    best=Best(**sweep.best) if sweep.best else None,
                    objective=Objective(**sweep.objective), max_trials=sweep.max_trials,
                    max_parallel=sweep.max_parallel, mlflow_run_id=sweep.mlflow_run_id,
                    mlflow_url=url, created_at=sweep.created_at, finished_at=sweep.finished_at)


def trial_params(spec: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """The values a trial's job spec holds at the sweep's parameter paths."""
    params = {}
    for path in paths:
        node: Any = spec
        for part in split_path(path):
            node = node[part]
        params[path] = node
    return params


def list_trials(session: Session, *, sweep: Sweep) -> list[TrialOut]:
    """Every trial by number: its job, the parameters it got, its status and objective."""
    paths = list(sweep.spec["parameters"])
    metric = sweep.objective["metric"]
    jobs = session.scalars(select(Job).where(Job.sweep_id == sweep.id).order_by(Job.trial))
    return [TrialOut(trial=job.trial or 0, job_id=job.id, params=trial_params(job.spec, paths),
                     status=job.status, value=objective_value(job, metric)) for job in jobs]


def objective_value(job: Job, metric: str) -> float | None:
    """A trial's objective: its last epoch's value, for trials that trained to an end."""
    if job.status not in (JobStatus.succeeded, JobStatus.pruned) or not job.metrics:
        return None
    value = job.metrics.get(metric)
    return float(value) if value is not None else None


def cancel_sweep(*, sweep_id: str, tenant: str) -> None:
    """No new trials (under the controller's lock, so none starts after this), queued and
    running trials cancelled; the controller's next turn tells the study and ends the MLflow
    run. A finished sweep: 409."""
    with locked_sweep(sweep_id) as session:
        sweep = get_sweep(session, sweep_id=sweep_id, tenant=tenant)
        if SweepStatus(sweep.status).is_final:
            raise Conflict(f"sweep {sweep.id} is already {sweep.status}")
        sweep.status, sweep.finished_at = SweepStatus.cancelled, utcnow()
        in_flight = session.scalars(select(Job.id).where(
            Job.sweep_id == sweep.id, Job.status.in_([JobStatus.queued, JobStatus.running])))
        for job_id in list(in_flight):
            moved = session.execute(
                update(Job).where(Job.id == job_id,
                                  Job.status.in_([JobStatus.queued, JobStatus.running]))
                .values(status=JobStatus.cancelled, finished_at=utcnow(),
                        error_type="cancelled", error_message="the sweep was cancelled"))
            if moved.rowcount:  # type: ignore[attr-defined]
                job_status_changed(session, job_id=job_id, status=JobStatus.cancelled)
        request_step(session, sweep.id)
        notify_sweep_finished(session, sweep)
        session.commit()


def promote_best(session: Session, *, sweep_id: str, tenant: str, alias: str) -> Promoted:
    """Point `alias` of the best trial's model at the version that trial registered (the best
    so far while the sweep runs); 409 while there is no best trial."""
    sweep = get_sweep(session, sweep_id=sweep_id, tenant=tenant)
    if not sweep.best:
        raise Conflict(f"sweep {sweep.id} has no succeeded trial yet ({sweep.status}); "
                       "there is nothing to promote")
    best = Best(**sweep.best)
    found = models.version_of_job(session, job_id=best.job_id)
    if found is None:
        raise Conflict(f"the best trial's job {best.job_id} registered no model version")
    name, version = found
    models.set_alias(session, tenant=tenant, name=name, alias=alias, version=version)
    return Promoted(model=name, version=version, alias=alias, trial=best.trial,
                    job_id=best.job_id)
