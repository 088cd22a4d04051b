"""Jobs: create (check, store, queue), read, list, history."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import Row, bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.aio_db import AsyncReader, postgres_sql
from api.cache import LRUCache
from api.db import read_row
from api.errors import Conflict, InvalidInput, NotFound, TooManyRequests, Unavailable
from api.lifecycle import job_status_changed
from api.models import Job, JobEpoch, JobStatus, new_id, utcnow
from api.queue import dispatch
from api.schemas import JobError, JobOut, Progress
from api.services.data import check_job
from api.services.paging import newest_first
from api.settings import Settings
from dlmodels.builder import Summary
from dlmodels.spec import JobSpec

log = logging.getLogger("taas.jobs")


def create_job(session: Session, *, spec: JobSpec, tenant: str, idempotency_key: str | None,
               settings: Settings, sweep_id: str | None = None, trial: int | None = None) -> Job:
    """Check the spec, store the job as queued, then send its id to the queue.

    If the broker cannot take the message the row is removed again and the caller gets 503:
    a job is either stored and queued, or not there at all.
    """
    if idempotency_key is not None:
        existing = _by_idempotency_key(session, tenant, idempotency_key)
        if existing is not None:
            return _same_spec_or_conflict(existing, spec)
    summary, (x, _) = check_job(spec, session=session, tenant=tenant)
    _check_size(spec=spec, summary=summary, samples=len(x), settings=settings)
    job_id = new_id()
    job = Job(id=job_id, tenant=tenant, name=spec.name or f"job-{job_id[:8]}",
              status=JobStatus.queued, queue="gpu" if spec.training.device == "cuda" else "cpu",
              spec=spec.model_dump(mode="json", exclude_none=True), summary=summary.model_dump(),
              epochs=spec.training.epochs, idempotency_key=idempotency_key,
              dispatched_at=utcnow(), sweep_id=sweep_id, trial=trial)
    try:
        _insert_within_limit(session, job, settings.max_concurrent_jobs)
    except (IntegrityError, TooManyRequests):
        # Another request with the same idempotency key won the race (and may have taken the
        # last slot): a retry gets that job, not an error.
        session.rollback()
        existing = _by_idempotency_key(session, tenant, idempotency_key) \
            if idempotency_key is not None else None
        if existing is None:
            raise
        return _same_spec_or_conflict(existing, spec)
    _dispatch_or_undo(session, job)
    return job


_sqlite_insert_lock = threading.Lock()


def _insert_within_limit(session: Session, job: Job, limit: int) -> None:
    """Count the tenant's queued and running jobs and insert, as one step per tenant: a
    Postgres advisory lock (SQLite: a process lock; it has one writer anyway) keeps concurrent
    submissions from all passing the count."""
    postgres = session.get_bind().dialect.name == "postgresql"
    with contextlib.nullcontext() if postgres else _sqlite_insert_lock:
        if postgres:
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:tenant))"),
                            {"tenant": job.tenant})
        in_flight = session.scalar(select(func.count()).select_from(Job).where(
            Job.tenant == job.tenant, Job.status.in_([JobStatus.queued, JobStatus.running])))
        if (in_flight or 0) >= limit:
            raise TooManyRequests(f"{in_flight} jobs are queued or running; the limit is "
                                  f"{limit}", headers={"Retry-After": "10"})
        session.add(job)
        session.commit()


def _dispatch_or_undo(session: Session, job: Job) -> None:
    try:
        dispatch(job.id, job.queue)
    except Exception as error:  # kombu raises many types for "broker unreachable"
        log.warning("broker unavailable, job %s not queued: %s", job.id, error)
        session.delete(job)
        session.commit()
        raise Unavailable("the job queue (broker) is unreachable; nothing was stored, retry "
                          "shortly", headers={"Retry-After": "5"}) from error


def check_runnable(session: Session, *, spec: JobSpec, tenant: str, settings: Settings) -> None:
    """Everything create_job checks before storing a job (SpecError or InvalidInput)."""
    summary, (x, _) = check_job(spec, session=session, tenant=tenant)
    _check_size(spec=spec, summary=summary, samples=len(x), settings=settings)


def check_model_size(summary: Summary, settings: Settings) -> None:
    """Models too large to run here are refused before anything is allocated."""
    if summary.total_params > settings.max_params:
        raise InvalidInput(f"the model has {summary.total_params:,} parameters; the limit is "
                           f"{settings.max_params:,}", ["model"])
    if summary.activation_bytes_per_sample > settings.max_activation_bytes:
        raise InvalidInput(f"the model needs {summary.activation_bytes_per_sample:,} bytes of "
                           f"activations per sample; the limit is "
                           f"{settings.max_activation_bytes:,}", ["model"])


def _check_size(*, spec: JobSpec, summary: Summary, samples: int, settings: Settings) -> None:
    check_model_size(summary, settings)
    limit = settings.max_processes_per_job  # unset: the worker's own CPUs or GPUs decide
    if limit is not None and spec.training.processes > limit:
        raise InvalidInput(f"{spec.training.processes} processes; the limit is {limit} "
                           "(TAAS_MAX_PROCESSES_PER_JOB)", ["training", "distributed", "processes"])
    work = spec.training.epochs * samples
    if work > settings.max_epoch_samples:
        raise InvalidInput(f"{spec.training.epochs} epochs x {samples} samples = {work:,}; the "
                           f"limit is {settings.max_epoch_samples:,}", ["training", "epochs"])


def _by_idempotency_key(session: Session, tenant: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.tenant == tenant, Job.idempotency_key == key))


def _same_spec_or_conflict(job: Job, spec: JobSpec) -> Job:
    if job.spec != spec.model_dump(mode="json", exclude_none=True):
        raise Conflict("this Idempotency-Key was already used with a different job spec")
    return job


class _Owned(Protocol):
    @property
    def tenant(self) -> str: ...


J = TypeVar("J", bound=_Owned)


def get_job(session: Session, *, job_id: str, tenant: str) -> Job:
    return _owned(session.get(Job, job_id), job_id=job_id, tenant=tenant)


def _owned(job: J | None, *, job_id: str, tenant: str) -> J:
    """The tenant's job (an ORM object or a row); another tenant's answers exactly like a
    missing one."""
    if job is None or job.tenant != tenant:
        raise NotFound(f"no job {job_id!r}")
    return job


@dataclass(frozen=True)
class FinishedJob:
    """A final-state job's answer: final states never change, so it can be kept (once a
    cancelled job's worker has had time to store its last epochs)."""

    tenant: str
    body: bytes


def finished_answer(finished: LRUCache[FinishedJob], *, job_id: str,
                    tenant: str) -> bytes | None:
    """The kept answer of this tenant's finished job, if any (no I/O: safe on the event loop)."""
    known = finished.get(job_id)
    return known.body if known is not None and known.tenant == tenant else None


# A status read: every column but the spec (it holds inline training data). Built once:
# building this select per call cost more than running it (~0.15 ms).
STATUS_QUERY = select(*[column for column in Job.__table__.c if column.key != "spec"]) \
    .where(Job.id == bindparam("job_id"))
_STATUS_SQL = postgres_sql(STATUS_QUERY)


def read_job(*, job_id: str, tenant: str, settings: Settings,
             finished: LRUCache[FinishedJob]) -> bytes:
    """GET /v1/jobs/{id}'s JSON; a finished job's is kept in `finished` for later reads. What
    polling clients call most, so it is one Core query, with no Session."""
    job = read_row(STATUS_QUERY, {"job_id": job_id})
    return _status_answer(job, job_id=job_id, tenant=tenant, settings=settings,
                          finished=finished)


async def read_job_async(reader: AsyncReader, *, job_id: str, tenant: str, settings: Settings,
                         finished: LRUCache[FinishedJob]) -> bytes:
    """`read_job` on the event loop, through Postgres' async driver (same query, same JSON)."""
    job = await reader.row(_STATUS_SQL, {"job_id": job_id})
    return _status_answer(job, job_id=job_id, tenant=tenant, settings=settings,
                          finished=finished)


def _status_answer(job: Any, *, job_id: str, tenant: str, settings: Settings,
                   finished: LRUCache[FinishedJob]) -> bytes:
    job = _owned(job, job_id=job_id, tenant=tenant)
    body = job_out(job, settings).model_dump_json().encode()
    if JobStatus(job.status).is_final and not _worker_may_still_write(job, settings):
        finished.put(job.id, FinishedJob(job.tenant, body))
    return body


def _worker_may_still_write(job: Any, settings: Settings) -> bool:
    """A job cancelled while running: its worker stores the epochs it trained once it sees the
    cancel (within a heartbeat and an epoch), so its answer is not final before a worker would
    be taken as lost."""
    if job.status != JobStatus.cancelled or job.started_at is None or job.finished_at is None:
        return False
    finished_at = job.finished_at if job.finished_at.tzinfo else \
        job.finished_at.replace(tzinfo=UTC)
    return bool(utcnow() - finished_at < timedelta(seconds=settings.heartbeat_timeout))


def list_jobs(session: Session, *, tenant: str, status: str | None, limit: int,
              cursor: str | None, sweep_id: str | None = None) -> tuple[list[Job], str | None]:
    """Newest first; the cursor is the (created_at, id) of the last job of the previous page."""
    query = select(Job).where(Job.tenant == tenant)
    if status is not None:
        query = query.where(Job.status == status)
    if sweep_id is not None:
        query = query.where(Job.sweep_id == sweep_id)
    return newest_first(session, query, Job, limit=limit, cursor=cursor)



def cancel_job(session: Session, *, job_id: str, tenant: str) -> Job:
    """queued or running -> cancelled, at once in the database; a running worker sees it at its
    next batch boundary and stops. Final states are final: 409."""
    job = get_job(session, job_id=job_id, tenant=tenant)
    result = session.execute(
        update(Job).where(Job.id == job.id, Job.status.in_([JobStatus.queued, JobStatus.running]))
        .values(status=JobStatus.cancelled, finished_at=utcnow(), error_type="cancelled",
                error_message="cancelled by request"))
    if result.rowcount:  # type: ignore[attr-defined]
        job_status_changed(session, job_id=job.id, status=JobStatus.cancelled)
    session.commit()
    session.refresh(job)
    if not result.rowcount:  # type: ignore[attr-defined]
        raise Conflict(f"job {job.id} is already {job.status}; only queued or running jobs can "
                       "be cancelled")
    return job


def job_history(session: Session, *, job: Job) -> list[dict[str, Any]]:
    rows = session.scalars(select(JobEpoch).where(JobEpoch.job_id == job.id)
                           .order_by(JobEpoch.epoch))
    return [{"epoch": row.epoch, **row.values} for row in rows]


def job_out(job: Job | Row[Any], settings: Settings) -> JobOut:
    """A job's public view, from its ORM object or a row of its columns (SQLAlchemy's or
    psycopg's named tuple)."""
    url = mlflow_url(job, settings)
    error = JobError(type=job.error_type, message=job.error_message or "") \
        if job.error_type else None
    return JobOut(id=job.id, name=job.name, status=JobStatus(job.status).value,
                  progress=Progress(epoch=job.progress_epoch, epochs=job.epochs),
                  metrics=job.metrics or {}, error=error, attempt=job.attempt,
                  mlflow_run_id=job.mlflow_run_id,
                  mlflow_url=url, created_at=job.created_at, started_at=job.started_at,
                  finished_at=job.finished_at, summary=Summary.model_validate(job.summary),
                  sweep_id=job.sweep_id, trial=job.trial)


# MLflow 3's UI shows one of two workflows, GenAI (its default: traces) or model training
# (runs, metrics, models); the query parameter picks the second for the page it opens.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def mlflow_url(job: Job | Row[Any], settings: Settings) -> str | None:
    """Where the MLflow UI shows the job's run, in its model-training view."""
    if not (job.mlflow_run_id and job.mlflow_experiment_id):
        return None
    return (f"{settings.mlflow_public_url}/#/experiments/{job.mlflow_experiment_id}"
            f"/runs/{job.mlflow_run_id}?{MODEL_TRAINING_VIEW}")
