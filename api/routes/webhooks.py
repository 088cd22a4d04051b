"""/v1/webhooks: endpoints told when a job (or sweep) ends; thin routes over api.services."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import SessionDep, SettingsDep, TenantDep
from api.models import Webhook
from api.schemas import BODY_ERRORS, V1_ERRORS, errors
from api.services import webhooks

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=errors(*V1_ERRORS))

EventType = Literal["job.succeeded", "job.failed", "job.cancelled", "sweep.finished"]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://example.com/taas-hook", "events": ["job.succeeded", "job.failed"]}]})
    url: str = Field(max_length=2000, description="http(s) URL that receives deliveries.")
    events: list[EventType] | None = Field(None, min_length=1, description="Default: all.")


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[EventType]
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="`whsec_...`: verifies deliveries' signatures. Shown only "
                        "here, once.", examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])


class DeliveryOut(BaseModel):
    id: str = Field(description="The `webhook-id` header, the same on every attempt.")
    type: EventType
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


def _out(webhook: Webhook) -> WebhookOut:
    return WebhookOut(id=webhook.id, url=webhook.url, events=webhook.events,
                      created_at=webhook.created_at)


@router.post("", status_code=201, response_model=WebhookCreated,
             responses=errors(*BODY_ERRORS, 422, descriptions={
                 422: "`validation_error`, or `invalid_input` (`loc: [\"url\"]`): the URL is "
                      "not http(s), does not resolve, or resolves to a non-public address."}),
             summary="Add an endpoint; the answer holds its signing secret, shown once",
             description="Deliveries follow the Standard Webhooks spec: headers `webhook-id`, "
                         "`webhook-timestamp`, `webhook-signature`; body `{type, timestamp, "
                         "data}`. A URL resolving to a private, loopback or link-local address "
                         "is refused (422) unless the service allows it.")
def create_webhook(body: WebhookCreate, session: SessionDep, tenant: TenantDep,
                   settings: SettingsDep) -> WebhookCreated:
    webhook = webhooks.create_webhook(session, tenant=tenant, url=body.url,
                                      events=list(body.events) if body.events else None,
                                      settings=settings)
    return WebhookCreated(**_out(webhook).model_dump(), secret=webhook.secret)


@router.get("", response_model=list[WebhookOut], summary="The tenant's endpoints (no secrets)")
def list_webhooks(session: SessionDep, tenant: TenantDep) -> list[WebhookOut]:
    return [_out(webhook) for webhook in webhooks.list_webhooks(session, tenant=tenant)]


@router.delete("/{webhook_id}", status_code=204, responses=errors(404),
               summary="Remove an endpoint (its pending deliveries are dropped)")
def delete_webhook(webhook_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    webhooks.delete_webhook(session, webhook_id=webhook_id, tenant=tenant)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryOut], responses=errors(404),
            summary="The endpoint's latest deliveries, newest first")
def list_deliveries(webhook_id: str, session: SessionDep, tenant: TenantDep,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[DeliveryOut]:
    return [DeliveryOut(id=d.id, type=d.type, status=d.status,
                        attempts=d.attempts, last_error=d.last_error, created_at=d.created_at,
                        delivered_at=d.delivered_at)
            for d in webhooks.list_deliveries(session, webhook_id=webhook_id, tenant=tenant,
                                              limit=limit)]
