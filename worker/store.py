"""The job's state machine in the database: conditional updates, so a stale worker or a
duplicate delivery can change nothing.

queued -> running (claim, attempt + 1) -> succeeded | failed | cancelled | pruned. Every write
after the claim names the attempt it belongs to and only applies while the job is still running
it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy.orm import Session

from api import events
from api.db import session_scope
from api.lifecycle import job_status_changed
from api.models import Job, JobCheckpoint, JobEpoch, JobStatus, JobWeights, utcnow
from dlmodels.serialize import sha256 as sha256_of


def claim(job_id: str) -> int | None:
    """queued -> running; returns the new attempt number, or None if the job is not queued."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.queued:
            return None
        attempt = job.attempt + 1
        result = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.queued,
                              Job.attempt == job.attempt)
            .values(status=JobStatus.running, attempt=attempt, started_at=utcnow(),
                    heartbeat_at=utcnow(), error_type=None, error_message=None))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        job_status_changed(session, job_id=job_id, status=JobStatus.running)
        return attempt


def _running(job_id: str, attempt: int) -> Any:
    return update(Job).where(Job.id == job_id, Job.attempt == attempt,
                             Job.status == JobStatus.running)


def still_running(job_id: str, attempt: int) -> bool:
    """True while this attempt owns the job (not cancelled, not re-assigned); beats the heart."""
    with session_scope() as session:
        result = session.execute(_running(job_id, attempt).values(heartbeat_at=utcnow()))
        return bool(result.rowcount)  # type: ignore[attr-defined]


def set_run(job_id: str, attempt: int, *, experiment_id: str, run_id: str) -> bool:
    with session_scope() as session:
        result = session.execute(_running(job_id, attempt).values(
            mlflow_experiment_id=experiment_id, mlflow_run_id=run_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Checkpoint:
    """A serialized end-of-epoch training state (`dlmodels.checkpoint.checkpoint`)."""

    epoch: int
    data: bytes

    @property
    def sha256(self) -> str:
        """Hashed when stored (by the writer thread, not the training loop)."""
        return sha256_of(self.data)


def record_progress(job_id: str, attempt: int, rows: list[dict[str, Any]],
                    checkpoint: Checkpoint | None = None) -> bool:
    """Store epoch rows, and the checkpoint if given, in one transaction; False if this attempt
    no longer owns the job.

    A retried attempt resumes after the stored checkpoint and never re-runs the epochs before
    it, so the caller passes a checkpoint only together with (or after) the rows up to its
    epoch: stored together, a checkpoint is never ahead of the history.
    """
    if not rows and checkpoint is None:
        return True
    with session_scope() as session:
        owns = session.execute(_running(job_id, attempt).values(**_progress(rows)))
        if not owns.rowcount:  # type: ignore[attr-defined]
            return False
        if rows:
            _replace_epochs(session, job_id, rows)
            events.epochs_recorded(session, job_id=job_id, rows=rows)
        if checkpoint is not None:
            session.merge(JobCheckpoint(job_id=job_id, epoch=checkpoint.epoch,
                                        data=checkpoint.data, sha256=checkpoint.sha256))
        return True


def record_remaining(job_id: str, attempt: int, rows: list[dict[str, Any]]) -> bool:
    """Store the epoch rows an attempt had not stored yet when its training stopped early.

    Allowed while the attempt runs, and also after a cancel (the job is no longer running, but
    the epochs it trained are still its history); never once another attempt claimed the job
    (`attempt` moved on). False if nothing could be written.
    """
    if not rows:
        return True
    with session_scope() as session:
        owns = session.execute(update(Job).where(
            Job.id == job_id, Job.attempt == attempt,
            Job.status.in_((JobStatus.running, JobStatus.cancelled))).values(**_progress(rows)))
        if not owns.rowcount:  # type: ignore[attr-defined]
            return False
        _replace_epochs(session, job_id, rows)
        events.epochs_recorded(session, job_id=job_id, rows=rows)
        return True


def _progress(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The job row's columns that a progress write moves (always the heartbeat)."""
    if not rows:
        return {"heartbeat_at": utcnow()}
    last = rows[-1]
    return {"heartbeat_at": utcnow(), "progress_epoch": last["epoch"],
            "metrics": {k: v for k, v in last.items() if k != "epoch"}}


def _replace_epochs(session: Session, job_id: str, rows: list[dict[str, Any]]) -> None:
    # A retried attempt re-runs the epochs after its checkpoint, which an earlier attempt may
    # have recorded: the newest wins, and its first write also drops the earlier attempt's rows
    # past the epochs it has reached.
    session.execute(delete(JobEpoch).where(JobEpoch.job_id == job_id,
                                           JobEpoch.epoch >= rows[0]["epoch"]))
    session.execute(insert(JobEpoch), [
        {"job_id": job_id, "epoch": row["epoch"],
         "values": {k: v for k, v in row.items() if k != "epoch"}} for row in rows])


def succeed(job_id: str, attempt: int, *, weights: bytes, sha256: str) -> bool:
    with session_scope() as session:
        result = session.execute(_running(job_id, attempt).values(
            status=JobStatus.succeeded, finished_at=utcnow(), weights_sha256=sha256))
        if not result.rowcount:  # type: ignore[attr-defined]
            return False
        session.merge(JobWeights(job_id=job_id, data=weights, sha256=sha256))
        job_status_changed(session, job_id=job_id, status=JobStatus.succeeded)
        return True


def fail(job_id: str, attempt: int, *, error_type: str, message: str) -> bool:
    with session_scope() as session:
        result = session.execute(_running(job_id, attempt).values(
            status=JobStatus.failed, finished_at=utcnow(), error_type=error_type,
            error_message=message[:4000]))
        return _changed(session, result, job_id, JobStatus.failed)


def prune(job_id: str, attempt: int, *, message: str) -> bool:
    """running (this attempt) -> pruned: a sweep's pruner stopped the trial (history kept)."""
    with session_scope() as session:
        result = session.execute(_running(job_id, attempt).values(
            status=JobStatus.pruned, finished_at=utcnow(), error_type="pruned",
            error_message=message[:4000]))
        return _changed(session, result, job_id, JobStatus.pruned)


def requeue(job_id: str, attempt: int, *, reason: str) -> bool:
    """running (this attempt) -> queued, for another attempt after an infrastructure error."""
    with session_scope() as session:
        result = session.execute(_running(job_id, attempt).values(
            status=JobStatus.queued, dispatched_at=utcnow(), error_type=None,
            error_message=f"attempt {attempt} interrupted: {reason}"[:4000]))
        return _changed(session, result, job_id, JobStatus.queued)


def _changed(session: Session, result: Any, job_id: str, status: JobStatus) -> bool:
    """True if the conditional UPDATE moved the job, whose consequences are then recorded."""
    if not result.rowcount:
        return False
    job_status_changed(session, job_id=job_id, status=status)
    return True


def status(job_id: str) -> str:
    with session_scope() as session:
        job = session.get(Job, job_id)
        return "missing" if job is None else str(job.status)


def load_checkpoint(job_id: str) -> JobCheckpoint | None:
    with session_scope() as session:
        found = session.get(JobCheckpoint, job_id)
        if found is not None:
            session.expunge(found)
        return found


def drop_checkpoint(job_id: str) -> None:
    with session_scope() as session:
        session.execute(delete(JobCheckpoint).where(JobCheckpoint.job_id == job_id))


def mark_mlflow_end_pending(job_id: str, status: str | None) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(mlflow_end_pending=status))
