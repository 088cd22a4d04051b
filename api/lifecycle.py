"""What follows a job's status change, written in the same transaction as the change itself.

Every writer of `jobs.status` (the worker's claim and endings, the reaper, a cancel request)
calls `job_status_changed` inside the transaction whose conditional UPDATE moved the status, and
only when that UPDATE matched a row. So whatever a status change implies (an event for the job's
stream, a webhook delivery, a sweep controller's turn, a model version) is committed with it or
not at all: a crash between the two cannot lose one or announce a change that did not happen.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from api import events
from api.models import JobStatus
from api.services import models, sweep_steps, webhooks


def job_status_changed(session: Session, *, job_id: str, status: JobStatus) -> None:
    """Record what a status change implies; runs in the caller's transaction."""
    # Each capability adds its one line here (events, webhooks, sweeps, model versions).
    if status == JobStatus.succeeded:  # first, so what announces the success can name it
        models.register_version(session, job_id=job_id)
    events.status_changed(session, job_id=job_id, status=status)
    webhooks.job_status_changed(session, job_id=job_id, status=status)
    sweep_steps.trial_status_changed(session, job_id=job_id, status=status)
