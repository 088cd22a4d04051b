"""Webhooks on the real stack: Standard Webhooks signatures checked by the standardwebhooks
package, retries with the same webhook-id, refused private destinations, tenancy."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, insert
from standardwebhooks import Webhook as Verifier

from api.models import WebhookDelivery
from tests.integration.conftest import StackFactory
from tests.integration.jobs import HEIGHTS, spec, submit, wait
from tests.integration.receiver import Receiver
from tests.integration.stack import Stack, wait_until

pytestmark = pytest.mark.integration

SHORT = spec(HEIGHTS, training={**HEIGHTS["training"], "epochs": 3})


@pytest.fixture
def hook(stack: Stack) -> Iterator[tuple[httpx.Client, Receiver, dict[str, Any]]]:
    """A receiver subscribed to every event (removed afterwards: the stack is shared)."""
    with stack.client() as client, Receiver() as receiver:
        response = client.post("/v1/webhooks", json={"url": receiver.url})
        assert response.status_code == 201, response.text
        created = response.json()
        yield client, receiver, created
        assert client.delete(f"/v1/webhooks/{created['id']}").status_code == 204


def _verified(secret: str, request: Any) -> dict[str, Any]:
    payload: dict[str, Any] = Verifier(secret).verify(request.body, request.headers)
    return payload


def test_a_job_ending_is_delivered_signed(hook: Any) -> None:
    client, receiver, created = hook
    assert created["secret"].startswith("whsec_")
    assert created["events"] == ["job.succeeded", "job.failed", "job.cancelled",
                                 "sweep.finished"]
    listed = client.get("/v1/webhooks").json()
    assert [w["id"] for w in listed if w["id"] == created["id"]] == [created["id"]]
    assert all("secret" not in w for w in listed)

    job = wait(client, submit(client, SHORT)["id"])
    assert job["status"] == "succeeded"
    long = submit(client, spec(HEIGHTS, training={**HEIGHTS["training"], "epochs": 100000}))
    assert client.post(f"/v1/jobs/{long['id']}/cancel").status_code == 200

    requests = receiver.wait_for(2)
    payloads = {p["data"]["id"]: p for p in (_verified(created["secret"], r) for r in requests)}
    assert payloads[job["id"]]["type"] == "job.succeeded"
    assert payloads[job["id"]]["data"]["status"] == "succeeded"
    assert payloads[job["id"]]["data"]["metrics"] == job["metrics"]
    assert payloads[long["id"]]["type"] == "job.cancelled"
    assert all(r.headers["webhook-id"].startswith("msg_") for r in requests)
    with pytest.raises(Exception, match="signature"):
        Verifier("whsec_" + "A" * 44).verify(requests[0].body, requests[0].headers)


def test_a_failing_receiver_gets_the_same_delivery_until_it_answers(hook: Any) -> None:
    client, receiver, created = hook
    receiver.failures = 2
    job = wait(client, submit(client, SHORT)["id"])
    requests = receiver.wait_for(3)
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    bodies = [_verified(created["secret"], r) for r in requests]
    assert all(b == bodies[0] for b in bodies) and bodies[0]["data"]["id"] == job["id"]

    def delivered() -> Any:
        found = client.get(f"/v1/webhooks/{created['id']}/deliveries").json()
        return found if found and found[0]["status"] == "delivered" else None

    deliveries = wait_until(delivered, 30, "the delivery's record")
    assert deliveries[0]["id"] == requests[0].headers["webhook-id"]
    assert deliveries[0]["attempts"] == 3
    assert deliveries[0]["last_error"] is None


def test_subscriptions_filter_events(hook: Any, stack: Stack) -> None:
    client, receiver, _ = hook
    with Receiver() as other:
        only_failed = client.post("/v1/webhooks", json={"url": other.url,
                                                        "events": ["job.failed"]}).json()
        try:
            wait(client, submit(client, SHORT)["id"])
            receiver.wait_for(1)
            assert other.requests == []
        finally:
            client.delete(f"/v1/webhooks/{only_failed['id']}")


def test_private_destinations_are_refused_and_webhooks_belong_to_their_tenant(
        stack_factory: StackFactory) -> None:
    private = stack_factory("embedded", workers=0, env={
        "TAAS_WEBHOOK_ALLOW_PRIVATE": "0", "TAAS_API_KEYS": "a:key-a,b:key-b"})
    a = private.client(headers={"Authorization": "Bearer key-a"})
    b = private.client(headers={"Authorization": "Bearer key-b"})
    for url in ("http://127.0.0.1:9/hook", "http://localhost/hook", "http://[::1]/hook",
                "http://169.254.169.254/latest/meta-data", "http://10.0.0.7/",
                "http://[::ffff:192.168.0.1]/", "ftp://example.com/hook"):
        response = a.post("/v1/webhooks", json={"url": url})
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"]["loc"] == ["url"], url
    response = a.post("/v1/webhooks", json={"url": "https://93.184.216.34/hook",
                                            "events": ["job.succeeded", "sweep.finished"]})
    assert response.status_code == 201, response.text
    webhook_id = response.json()["id"]
    response = a.post("/v1/webhooks", json={"url": "https://93.184.216.34/", "events": ["x"]})
    assert response.status_code == 422 and response.json()["error"]["loc"][0] == "events"

    assert b.get("/v1/webhooks").json() == []
    assert b.delete(f"/v1/webhooks/{webhook_id}").status_code == 404
    assert b.get(f"/v1/webhooks/{webhook_id}/deliveries").status_code == 404
    assert [w["id"] for w in a.get("/v1/webhooks").json()] == [webhook_id]
    assert a.delete(f"/v1/webhooks/{webhook_id}").status_code == 204
    assert a.delete(f"/v1/webhooks/{webhook_id}").status_code == 404
    assert json.loads(a.get("/v1/webhooks").text) == []


def test_the_reaper_sends_a_delivery_whose_message_was_lost(hook: Any, stack: Stack) -> None:
    """A delivery committed but never sent to the broker (the API or worker died right after
    the commit) is found by the worker's reaper and sent."""
    _, receiver, created = hook
    url = stack.env.get("TAAS_DATABASE_URL") or \
        f"sqlite:///{stack.env['TAAS_DATA_DIR']}/taas.db"
    engine = create_engine(url)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    lost_id = f"msg_{uuid.uuid4().hex}"
    payload = {"type": "job.failed", "timestamp": long_ago.isoformat(), "data": {"id": "lost"}}
    with engine.begin() as connection:
        connection.execute(insert(WebhookDelivery.__table__).values(
            id=lost_id, webhook_id=created["id"], type="job.failed",
            payload=payload, status="pending", attempts=0, next_at=long_ago,
            dispatched_at=long_ago, created_at=long_ago))
    engine.dispose()
    requests = receiver.wait_for(1, timeout=60)
    assert requests[0].headers["webhook-id"] == lost_id
    assert _verified(created["secret"], requests[0]) == payload
