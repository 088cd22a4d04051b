"""When a sweep's controller must take a turn: recorded in the database in the transaction
that made it necessary (a trial ended, a cancel), and sent to a worker once that commits.

`step_requested_at` stays set until a turn has run, so a lost message (broker down, worker
killed) is re-sent by the reaper: a sweep never waits on a message that will not come.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from api.models import Job, JobStatus, Sweep, utcnow
from api.queue import dispatch_sweep_step

log = logging.getLogger("taas.sweeps")


def trial_status_changed(session: Session, *, job_id: str, status: JobStatus) -> None:
    """A trial that reached a final state gives its sweep's controller a turn."""
    if not status.is_final:
        return
    sweep_id = session.scalar(select(Job.sweep_id).where(Job.id == job_id))
    if sweep_id is not None:
        request_step(session, sweep_id)


def request_step(session: Session, sweep_id: str, *, send_now: bool = True) -> None:
    """Mark the sweep as needing a turn (in the caller's transaction) and send the turn to a
    worker after the transaction commits; without `send_now`, the reaper sends it after
    TAAS_REQUEUE_AFTER (a turn that must wait, e.g. for the tenant's job limit)."""
    session.execute(update(Sweep).where(Sweep.id == sweep_id)
                    .values(step_requested_at=utcnow()))

    if not send_now:
        return
    pending: set[str] = session.info.setdefault("sweep_steps", set())
    if sweep_id in pending:  # one turn per sweep per transaction (a cancel ends many trials)
        return
    pending.add(sweep_id)

    def send(_: Any) -> None:
        pending.discard(sweep_id)
        try:
            dispatch_sweep_step(sweep_id)
        except Exception as error:  # kombu raises many types; the reaper re-sends it later
            log.warning("sweep %s: controller turn not sent (%s); the reaper will", sweep_id,
                        error)

    event.listen(session, "after_commit", send, once=True)


def notify_sweep_finished(session: Session, sweep: Sweep) -> None:
    """Called in the transaction that moves a sweep to a final state: the `sweep.finished`
    webhook, with the sweep as GET /v1/sweeps/{id} shows it, commits with the ending."""
    # Imported here: api.services.sweeps imports this module.
    from api.services import webhooks
    from api.services.sweeps import sweep_out
    from api.settings import get_settings

    log.info("sweep %s finished: %s", sweep.id, sweep.status)
    session.flush()  # the trial counts below read the trials' final states
    data = sweep_out(session, sweep, get_settings()).model_dump(mode="json")
    webhooks.enqueue_event(session, tenant=sweep.tenant, type="sweep.finished", data=data)
