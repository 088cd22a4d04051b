"""The reaper: finds jobs that lost their worker or their broker message, and fixes them.

It runs as a thread in every worker's main process (so no extra process has to be run), every
heartbeat interval. Its updates are conditional, so several reapers never act twice:
- a running job whose heartbeat is older than the timeout goes back to queued (and is sent
  again) while attempts remain, else fails with `worker_lost`;
- a queued job sent longer ago than `requeue_after` and never claimed is sent again (its
  message was lost, e.g. in a Redis restart, or the broker was down);
- a finished job whose MLflow run could not be ended (MLflow was down) is ended now;
- a webhook delivery that is overdue and was not sent again lately is sent again.
- alias changes not yet in MLflow's Model Registry are copied there.
- a sweep whose controller turn was requested longer ago than `requeue_after` and has not run
  (its message was lost, or it waits for the tenant's job limit) gets the turn sent again.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import select, update

from api.db import session_scope
from api.lifecycle import job_status_changed
from api.models import Job, JobStatus, Sweep, mlflow_model_name, utcnow
from api.queue import dispatch, dispatch_sweep_step
from api.services import models
from api.settings import Settings
from worker.webhooks import resend_due

log = logging.getLogger("taas.reaper")


def reap_lost_workers(settings: Settings) -> list[str]:
    cutoff = utcnow() - timedelta(seconds=settings.heartbeat_timeout)
    with session_scope() as session:
        stale = session.execute(select(Job.id, Job.attempt, Job.queue, Job.mlflow_run_id).where(
            Job.status == JobStatus.running, Job.heartbeat_at < cutoff)).all()
    requeued = []
    for job_id, attempt, queue, run_id in stale:
        if not _take_over(job_id, attempt, cutoff, settings):
            continue
        _end_lost_run(run_id, settings)
        if attempt < settings.max_attempts:
            log.warning("job %s lost its worker on attempt %s; re-queued", job_id, attempt)
            requeued.append((job_id, queue))
    for job_id, queue in requeued:
        dispatch(job_id, queue)
    return [job_id for job_id, _ in requeued]


def _take_over(job_id: str, attempt: int, cutoff: datetime, settings: Settings) -> bool:
    """Re-queue (or, out of attempts, fail) a job whose attempt stopped beating; False when
    it beat again or another reaper acted first."""
    still_stale = update(Job).where(Job.id == job_id, Job.attempt == attempt,
                                    Job.status == JobStatus.running, Job.heartbeat_at < cutoff)
    with session_scope() as session:
        status = JobStatus.failed if attempt >= settings.max_attempts else JobStatus.queued
        if status is JobStatus.failed:
            result = session.execute(still_stale.values(
                status=JobStatus.failed, finished_at=utcnow(), error_type="worker_lost",
                error_message=f"the worker running attempt {attempt} of "
                              f"{settings.max_attempts} stopped answering (no heartbeat for "
                              f"{settings.heartbeat_timeout:g}s); giving up"))
        else:
            result = session.execute(still_stale.values(status=JobStatus.queued,
                                                        dispatched_at=utcnow()))
        if not result.rowcount:  # type: ignore[attr-defined]
            return False
        job_status_changed(session, job_id=job_id, status=status)
        return True


def _end_lost_run(run_id: str | None, settings: Settings) -> None:
    """The lost attempt's MLflow run ends as FAILED, so no run stays RUNNING."""
    if run_id is None:
        return
    from worker.tracking import Tracker  # MLflow is imported only where it is used

    tracker = Tracker(tracking_uri=settings.mlflow_tracking_uri,
                      experiment=settings.mlflow_experiment, timeout=2)
    tracker.run_id = run_id
    tracker.end("FAILED")


def resend_unclaimed(settings: Settings) -> list[str]:
    cutoff = utcnow() - timedelta(seconds=settings.requeue_after)
    with session_scope() as session:
        waiting = session.execute(select(Job.id, Job.queue).where(
            Job.status == JobStatus.queued, Job.dispatched_at < cutoff)).all()
        for job_id, _ in waiting:
            session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.queued)
                            .values(dispatched_at=utcnow()))
    for job_id, queue in waiting:
        dispatch(job_id, queue)  # a duplicate is harmless: only one claim can win
    return [job_id for job_id, _ in waiting]


def end_pending_runs(settings: Settings) -> None:
    from worker.tracking import Tracker  # MLflow is imported only where it is used

    with session_scope() as session:
        pending = session.execute(select(Job.id, Job.mlflow_run_id, Job.mlflow_end_pending)
                                  .where(Job.mlflow_end_pending.is_not(None))).all()
    for job_id, run_id, status in pending:
        tracker = Tracker(tracking_uri=settings.mlflow_tracking_uri,
                          experiment=settings.mlflow_experiment, timeout=0)
        tracker.run_id = run_id
        if tracker.end(str(status)):
            with session_scope() as session:
                session.execute(update(Job).where(Job.id == job_id)
                                .values(mlflow_end_pending=None))


def sync_aliases(settings: Settings) -> None:
    """Copy alias changes committed in the database to MLflow's registry (the database is the
    source of truth; while MLflow is down they stay pending and are retried next round)."""
    from worker.tracking import TRANSIENT, RegistryMismatch, set_registry_alias

    with session_scope() as session:
        pending = models.pending_aliases(session)
    for tenant, name, alias, version, updated_at in pending:
        with session_scope() as session:
            job_id = None if version is None else models.job_of_version(
                session, tenant=tenant, name=name, version=version)
            run_id = session.scalar(select(Job.mlflow_run_id).where(Job.id == job_id)) \
                if job_id is not None else None
        try:
            set_registry_alias(settings.mlflow_tracking_uri, model=mlflow_model_name(
                tenant, name), alias=alias, run_id=run_id)
        except RegistryMismatch as error:  # nothing to point at in MLflow: stop retrying
            log.warning("alias %s of %s not copied to MLflow: %s", alias, name, error)
        except TRANSIENT as error:
            log.warning("MLflow unreachable; alias %s of %s stays pending: %s", alias, name,
                        error)
            return
        with session_scope() as session:
            models.alias_synced(session, tenant=tenant, name=name, alias=alias,
                                updated_at=updated_at)


def kick_sweeps(settings: Settings) -> list[str]:
    cutoff = utcnow() - timedelta(seconds=settings.requeue_after)
    with session_scope() as session:
        waiting = list(session.scalars(select(Sweep.id).where(
            Sweep.step_requested_at < cutoff)))
        for sweep_id in waiting:  # sent again only after another requeue_after
            session.execute(update(Sweep).where(Sweep.id == sweep_id)
                            .values(step_requested_at=utcnow()))
    for sweep_id in waiting:
        dispatch_sweep_step(sweep_id)  # a duplicate is harmless: turns take the sweep's lock
    return waiting


def reap_once(settings: Settings) -> None:
    for step in (reap_lost_workers, resend_unclaimed, end_pending_runs, resend_due,
                 sync_aliases, kick_sweeps):
        try:
            step(settings)
        except Exception as error:  # the database or broker may be down; try next round
            log.warning("reaper: %s failed: %s: %s", step.__name__, type(error).__name__, error)


class Reaper(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(name="taas-reaper", daemon=True)
        self.settings = settings
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.heartbeat_interval):
            reap_once(self.settings)
