"""Sending webhook deliveries: signed the Standard Webhooks way, at least once, with backoff.

A delivery is claimed with a lease (its `next_at` moved past the request's timeout) by a
conditional UPDATE, so duplicate broker messages send it once at a time. A failed attempt waits
`webhook_backoff` x 2^(attempt - 1) seconds (at most `webhook_max_backoff`) and is sent again,
until `webhook_retry_for` seconds after the event; then it is marked failed. The destination is
checked again at every attempt (its DNS may have changed since the endpoint was created).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from standardwebhooks import Webhook as Signer

from api.db import session_scope
from api.destinations import RefusedDestination, destination
from api.models import DeliveryStatus, Webhook, WebhookDelivery, utcnow
from api.queue import dispatch_delivery
from api.settings import Settings

log = logging.getLogger("taas.webhooks")


class _Claimed:
    def __init__(self, row: Any) -> None:
        self.url: str = row.url
        self.secret: str = row.secret
        self.payload: dict[str, Any] = row.payload
        self.attempts: int = row.attempts
        self.created_at: datetime = row.created_at


def deliver(delivery_id: str, settings: Settings) -> None:
    """One attempt at a delivery, if it is due and nobody else is sending it."""
    claimed = _claim(delivery_id, lease=settings.webhook_timeout + 30)
    if claimed is None:
        return
    error, permanent = _send(delivery_id, claimed, settings)
    retry_in = _record(delivery_id, claimed, error=error, permanent=permanent, settings=settings)
    if retry_in is not None:
        dispatch_delivery(delivery_id, countdown=retry_in)


def _claim(delivery_id: str, *, lease: float) -> _Claimed | None:
    now = utcnow()
    with session_scope() as session:
        row = session.execute(
            select(WebhookDelivery.attempts, WebhookDelivery.payload, WebhookDelivery.created_at,
                   Webhook.url, Webhook.secret)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(WebhookDelivery.id == delivery_id)).one_or_none()
        if row is None:
            return None  # the endpoint was deleted
        # A message may arrive a little before its countdown on another host's clock.
        taken = session.execute(update(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.status == DeliveryStatus.pending,
            WebhookDelivery.attempts == row.attempts,
            WebhookDelivery.next_at <= now + timedelta(seconds=1))
            .values(next_at=now + timedelta(seconds=lease)))
        return _Claimed(row) if taken.rowcount == 1 else None  # type: ignore[attr-defined]


def _send(delivery_id: str, claimed: _Claimed, settings: Settings) -> tuple[str | None, bool]:
    """(None, _) when the receiver answered 2xx; else (what went wrong, whether retrying is
    pointless)."""
    try:
        target = destination(claimed.url, allow_private=settings.webhook_allow_private)
    except RefusedDestination as error:
        return f"refused destination: {error}", True
    body = json.dumps(claimed.payload, separators=(",", ":"))
    now = datetime.now(UTC)
    headers = {"content-type": "application/json", "user-agent": "taas-webhooks/1",
               "webhook-id": delivery_id, "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": Signer(claimed.secret).sign(delivery_id, now, body)}
    if target.host_header is not None:
        headers["host"] = target.host_header
    extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
    try:
        # No redirects: a redirect could lead to an address the check above would refuse.
        with httpx.Client(timeout=settings.webhook_timeout, follow_redirects=False,
                          trust_env=False) as client:
            response = client.post(target.url, content=body.encode(), headers=headers,
                                   extensions=extensions)
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}", False
    if response.is_success:
        return None, False
    return f"HTTP {response.status_code}: {response.text[:200]}", False


def _record(delivery_id: str, claimed: _Claimed, *, error: str | None, permanent: bool,
            settings: Settings) -> float | None:
    """Store the attempt's outcome; the seconds until the next attempt, or None."""
    attempts = claimed.attempts + 1
    now = utcnow()
    values: dict[str, Any] = {"attempts": attempts, "last_error": error}
    retry_in = None
    if error is None:
        values |= {"status": DeliveryStatus.delivered, "delivered_at": now}
    else:
        wait = min(settings.webhook_backoff * 2 ** (attempts - 1), settings.webhook_max_backoff)
        retry_at = now + timedelta(seconds=wait)
        if permanent or retry_at > claimed.created_at + timedelta(
                seconds=settings.webhook_retry_for):
            values["status"] = DeliveryStatus.failed
            log.warning("webhook delivery %s failed after %d attempts: %s", delivery_id,
                        attempts, error)
        else:
            values |= {"next_at": retry_at, "dispatched_at": now}
            retry_in = wait
    with session_scope() as session:
        session.execute(update(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.status == DeliveryStatus.pending,
            WebhookDelivery.attempts == claimed.attempts).values(**values))
    return retry_in


def resend_due(settings: Settings) -> list[str]:
    """Re-send deliveries overdue by `requeue_after` whose message was lost (or whose sender
    died mid-attempt) and that were not re-sent within that time; their ids."""
    cutoff = utcnow() - timedelta(seconds=settings.requeue_after)
    with session_scope() as session:
        due = list(session.scalars(select(WebhookDelivery.id).where(
            WebhookDelivery.status == DeliveryStatus.pending, WebhookDelivery.next_at < cutoff,
            WebhookDelivery.dispatched_at < cutoff).limit(1000)))
        if due:
            session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(due))
                            .values(dispatched_at=utcnow()))
    for delivery_id in due:
        dispatch_delivery(delivery_id)  # a duplicate is harmless: only one claim can win
    return due
