"""GET /v1/jobs/{id}/events: a job's Server-Sent Events, replayed from the database.

Each connection polls the job's events table (api.events) every `events_poll_interval`
seconds, at most `EVENTS_PER_READ` rows a read: on Postgres on the event loop, on SQLite in a
worker thread for the read only, so no thread is held between reads. FastAPI's
EventSourceResponse sends a keep-alive comment when nothing was sent for 15 s, and its
producer hands one event at a time to a slow client (a buffer of one), so a slow or vanished
client costs one paused coroutine; a disconnect cancels it. A stream lasts at most
`events_max_seconds`; a client reconnects with `Last-Event-ID` and misses nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api import events
from api.aio_db import AsyncReader
from api.deps import ReaderDep, SettingsDep, TenantDep
from api.errors import InvalidInput, NotFound
from api.models import JobStatus
from api.schemas import V1_ERRORS, errors


def json_errors(*codes: int, descriptions: dict[int, str] | None = None
                ) -> dict[int | str, dict[str, Any]]:
    """`errors(...)`, declared as JSON: errors answer JSON, not the stream's media type (which
    FastAPI would give a bare `model`)."""
    entries = errors(*codes, descriptions=descriptions)
    for entry in entries.values():
        del entry["model"]
        entry["content"] = {"application/json": {"schema": {
            "$ref": "#/components/schemas/ErrorBody"}}}
    return entries


router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=json_errors(*V1_ERRORS))

EVENTS_PER_READ = 100
MAX_EVENT_ID = 2**63 - 1  # the id column's range (Postgres bigint)
STATUS_CHECK_SECONDS = 5.0


@dataclass(frozen=True)
class StreamStart:
    job_id: str
    after: int  # the last event id the client has seen (0: none)
    final: bool  # the job had ended when the client connected


async def stream_start(job_id: str, tenant: TenantDep, reader: ReaderDep,
                       last_event_id: Annotated[str | None, Header(max_length=20)] = None,
                       ) -> StreamStart:
    """Checked before the stream starts, so a wrong id or header is an ordinary error answer."""
    after = 0
    if last_event_id is not None:
        if not last_event_id.strip().isdigit() or int(last_event_id) > MAX_EVENT_ID:
            raise InvalidInput("Last-Event-ID must be an event id this stream sent (a whole "
                               "number)", ["header", "last-event-id"])
        after = int(last_event_id)
    found = await _owner_and_status(reader, job_id=job_id)
    if found is None or found[0] != tenant:
        raise NotFound(f"no job {job_id!r}")
    return StreamStart(job_id=job_id, after=after, final=JobStatus(found[1]).is_final)


@router.get("/{job_id}/events", response_class=EventSourceResponse,
            responses=json_errors(404, 422, descriptions={
                422: "`invalid_input`: a Last-Event-ID that is not an event id."}),
            summary="Live events: `status` (the job) and `epoch` ({epoch, loss, ...})",
            description="Server-Sent Events. Every event has an `id`; reconnecting with the "
                        "`Last-Event-ID` header replays from the database what came after it, "
                        "with no gap and no repeat. A `status` event carries the job as "
                        "`GET /v1/jobs/{id}` shows it; an `epoch` event one epoch's metrics (a "
                        "retried attempt's re-run epochs come again and replace the earlier "
                        "ones). The stream ends after the final status.")
async def job_events(start: Annotated[StreamStart, Depends(stream_start)], reader: ReaderDep,
                     settings: SettingsDep) -> AsyncIterator[ServerSentEvent]:
    after, ends_at = start.after, time.monotonic() + settings.events_max_seconds
    ended, check_at = start.final, time.monotonic() + STATUS_CHECK_SECONDS
    while True:
        batch = await _read(reader, job_id=start.job_id, after=after)
        for event in batch:
            yield ServerSentEvent(id=str(event.id), event=event.type, data=event.data)
            after = event.id
            if event.is_final:
                return
        # An ended job's events were committed with its final status: once they are sent (or
        # the client had them), nothing more will come.
        if (not batch and ended) or time.monotonic() > ends_at:
            return
        if len(batch) == EVENTS_PER_READ:
            continue
        if not batch and time.monotonic() > check_at:
            # Now and then, whether the job ended unseen: a client resuming past the final
            # event, or a job that ended before events were kept. Then one more read.
            ended = await _has_ended(reader, job_id=start.job_id)
            check_at = time.monotonic() + STATUS_CHECK_SECONDS
            if ended:
                continue
        await asyncio.sleep(settings.events_poll_interval)


async def _has_ended(reader: AsyncReader | None, *, job_id: str) -> bool:
    found = await _owner_and_status(reader, job_id=job_id)
    return found is None or JobStatus(found[1]).is_final


async def _owner_and_status(reader: AsyncReader | None, *,
                            job_id: str) -> tuple[str, str] | None:
    if reader is not None:
        return await events.owner_and_status_async(reader, job_id=job_id)
    return await run_in_threadpool(events.owner_and_status, job_id=job_id)


async def _read(reader: AsyncReader | None, *, job_id: str, after: int) -> list[events.Event]:
    if reader is not None:
        return await events.events_after_async(reader, job_id=job_id, after=after,
                                               limit=EVENTS_PER_READ)
    return await run_in_threadpool(events.events_after, job_id=job_id, after=after,
                                   limit=EVENTS_PER_READ)
