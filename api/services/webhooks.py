"""Webhooks: a tenant's endpoints, and the deliveries an event creates for them.

`enqueue_event` inserts one delivery per subscribed endpoint in the caller's transaction, so an
event (a job ending) and its deliveries are committed together or not at all. Their ids are sent
to the broker only after that commit (a session `after_commit` hook); a send that fails then is
made again by the worker's reaper, which re-sends every due delivery nobody is working on. The
worker delivers them (worker.webhooks), signed the Standard Webhooks way.
"""

from __future__ import annotations

import base64
import logging
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from api.destinations import RefusedDestination, check_url, destination
from api.errors import InvalidInput, NotFound
from api.models import DeliveryStatus, Job, JobStatus, Webhook, WebhookDelivery, utcnow
from api.queue import dispatch_delivery
from api.settings import Settings, get_settings

log = logging.getLogger("taas.webhooks")

EVENT_TYPES: Final = ("job.succeeded", "job.failed", "job.cancelled", "sweep.finished")
# Where a session keeps the deliveries it inserted until its transaction commits.
_PENDING = "taas.webhook_deliveries"


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def create_webhook(session: Session, *, tenant: str, url: str, events: list[str] | None,
                   settings: Settings) -> Webhook:
    """Store an endpoint (its URL checked now, and again at each delivery)."""
    try:
        check_url(url)
        destination(url, allow_private=settings.webhook_allow_private)
    except RefusedDestination as error:
        raise InvalidInput(str(error), ["url"]) from None
    webhook = Webhook(tenant=tenant, url=url, events=list(dict.fromkeys(events or EVENT_TYPES)),
                      secret=new_secret())
    session.add(webhook)
    session.commit()
    return webhook


def list_webhooks(session: Session, *, tenant: str) -> list[Webhook]:
    return list(session.scalars(select(Webhook).where(Webhook.tenant == tenant)
                                .order_by(Webhook.created_at, Webhook.id)))


def get_webhook(session: Session, *, webhook_id: str, tenant: str) -> Webhook:
    webhook = session.get(Webhook, webhook_id)
    if webhook is None or webhook.tenant != tenant:  # another tenant's answers like a missing one
        raise NotFound(f"no webhook {webhook_id!r}")
    return webhook


def delete_webhook(session: Session, *, webhook_id: str, tenant: str) -> None:
    """Remove an endpoint and its deliveries (pending ones are not sent any more)."""
    session.delete(get_webhook(session, webhook_id=webhook_id, tenant=tenant))
    session.commit()


def list_deliveries(session: Session, *, webhook_id: str, tenant: str,
                    limit: int) -> list[WebhookDelivery]:
    """The endpoint's latest deliveries, newest first."""
    webhook = get_webhook(session, webhook_id=webhook_id, tenant=tenant)
    return list(session.scalars(select(WebhookDelivery)
                                .where(WebhookDelivery.webhook_id == webhook.id)
                                .order_by(WebhookDelivery.created_at.desc(),
                                          WebhookDelivery.id.desc()).limit(limit)))


def enqueue_event(session: Session, *, tenant: str, type: str, data: dict[str, Any]) -> list[str]:
    """One delivery of `{type, timestamp, data}` per endpoint of `tenant` subscribed to `type`,
    inserted in the caller's transaction and sent to the broker after it commits; their ids."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {type!r}; known: {', '.join(EVENT_TYPES)}")
    now = utcnow()
    payload = {"type": type, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data}
    ids = []
    for webhook in session.scalars(select(Webhook).where(Webhook.tenant == tenant)):
        if type not in webhook.events:
            continue
        delivery_id = f"msg_{uuid.uuid4().hex}"
        session.add(WebhookDelivery(id=delivery_id, webhook_id=webhook.id, type=type,
                                    payload=payload, status=DeliveryStatus.pending,
                                    attempts=0, next_at=now, dispatched_at=now, created_at=now))
        ids.append(delivery_id)
    if ids:
        session.flush()
        session.info.setdefault(_PENDING, []).extend(ids)
    return ids


_JOB_EVENTS: Final = {JobStatus.succeeded: "job.succeeded", JobStatus.failed: "job.failed",
                      JobStatus.cancelled: "job.cancelled"}


def job_status_changed(session: Session, *, job_id: str, status: JobStatus) -> None:
    """A job that reached a final state announces it, with its public view as the data."""
    type_ = _JOB_EVENTS.get(status)
    if type_ is None:
        return
    job = session.get(Job, job_id, populate_existing=True)
    if job is not None:
        enqueue_event(session, tenant=job.tenant, type=type_, data=_job_data(job))


def _job_data(job: Job) -> dict[str, Any]:
    """The job as GET /v1/jobs/{id} shows it, without the model summary."""
    # Imported here: api.services.jobs itself imports the lifecycle hook that calls this.
    from api.services.jobs import mlflow_url

    error = {"type": job.error_type, "message": job.error_message or ""} \
        if job.error_type else None
    return {"id": job.id, "name": job.name, "status": job.status,
            "progress": {"epoch": job.progress_epoch, "epochs": job.epochs},
            "metrics": job.metrics or {}, "error": error, "attempt": job.attempt,
            "mlflow_run_id": job.mlflow_run_id, "mlflow_url": mlflow_url(job, get_settings()),
            **{name: _iso(getattr(job, name))
               for name in ("created_at", "started_at", "finished_at")}}


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


@event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    for delivery_id in session.info.pop(_PENDING, []):
        try:
            dispatch_delivery(delivery_id)
        except Exception as error:  # kombu raises many types for "broker unreachable"
            log.warning("delivery %s not sent to the broker (the reaper will): %s",
                        delivery_id, error)


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)

