"""A job's event stream: the rows behind GET /v1/jobs/{id}/events.

Writers (no FastAPI here; the worker calls them too):
- `status_changed`, from api.lifecycle.job_status_changed, stores a `status` event holding the
  job's public view (GET /v1/jobs/{id}) as of the change;
- `epochs_recorded`, from worker.store.record_progress, stores an `epoch` event per epoch row.

Both run in the transaction that moved the job, after its UPDATE of the job's row: that row
lock orders the writers of one job, so one job's event ids grow in the order their
transactions commit. A reader that asks for "ids after the last one I saw" therefore never
skips an event a slower transaction commits later (no gap), and ids are never reused (no
repeat). A retried attempt re-runs the epochs after its checkpoint: they are announced again,
with new ids; an `epoch` event for an epoch seen before replaces it (as in /metrics, the newest
attempt's values win).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from api.aio_db import AsyncReader, postgres_sql
from api.db import get_read_engine
from api.models import Job, JobEvent, JobStatus
from api.settings import get_settings

STATUS, EPOCH = "status", "epoch"


def status_changed(session: Session, *, job_id: str, status: JobStatus) -> None:
    """Store a `status` event: the job as GET /v1/jobs/{id} shows it after this change."""
    # Imported here: api.services.jobs, a writer of statuses, reaches this module through
    # api.lifecycle, so a module-level import would be circular.
    from api.services import jobs as job_views

    row = session.execute(job_views.STATUS_QUERY, {"job_id": job_id}).one()
    view = job_views.job_out(row, get_settings()).model_dump(mode="json")
    assert view["status"] == status.value, (view["status"], status)
    session.execute(insert(JobEvent).values(job_id=job_id, type=STATUS, data=view))


def epochs_recorded(session: Session, *, job_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Store an `epoch` event per epoch row ({epoch, loss, val_loss?, <metric>...})."""
    if rows:
        session.execute(insert(JobEvent), [
            {"job_id": job_id, "type": EPOCH, "data": dict(row)} for row in rows])


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    data: dict[str, Any]

    @property
    def is_final(self) -> bool:
        return self.type == STATUS and JobStatus(self.data["status"]).is_final


# Built once (building a select costs more than running it).
_EVENTS_QUERY = (select(JobEvent.id, JobEvent.type, JobEvent.data)
                 .where(JobEvent.job_id == bindparam("job_id"),
                        JobEvent.id > bindparam("after"))
                 .order_by(JobEvent.id).limit(bindparam("limit")))
_EVENTS_SQL = postgres_sql(_EVENTS_QUERY)
_OWNER_QUERY = select(Job.tenant, Job.status).where(Job.id == bindparam("job_id"))
_OWNER_SQL = postgres_sql(_OWNER_QUERY)


def events_after(*, job_id: str, after: int, limit: int) -> list[Event]:
    """The job's events with ids above `after`, oldest first (a blocking read)."""
    parameters = {"job_id": job_id, "after": after, "limit": limit}
    with get_read_engine().connect() as connection:
        return [Event(*row) for row in connection.execute(_EVENTS_QUERY, parameters)]


async def events_after_async(reader: AsyncReader, *, job_id: str, after: int,
                             limit: int) -> list[Event]:
    """`events_after` on the event loop, through Postgres' async driver."""
    rows = await reader.rows(_EVENTS_SQL, {"job_id": job_id, "after": after, "limit": limit})
    return [Event(row.id, row.type, row.data) for row in rows]


def owner_and_status(*, job_id: str) -> tuple[str, str] | None:
    with get_read_engine().connect() as connection:
        row = connection.execute(_OWNER_QUERY, {"job_id": job_id}).one_or_none()
    return None if row is None else (row.tenant, row.status)


async def owner_and_status_async(reader: AsyncReader, *, job_id: str) -> tuple[str, str] | None:
    row = await reader.row(_OWNER_SQL, {"job_id": job_id})
    return None if row is None else (row.tenant, row.status)
