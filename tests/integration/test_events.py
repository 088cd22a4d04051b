"""GET /v1/jobs/{id}/events on the real stack (Postgres + Redis, and the embedded default):
every epoch arrives once, a dropped connection resumes with Last-Event-ID missing nothing and
repeating nothing, the stream ends after the final status, auth and tenancy as every route."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.authed import authed_stack, headers
from tests.integration.jobs import HEIGHTS, spec, submit
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

EPOCHS = 20
# Batches of one: slow enough that a stream joins the job while it runs.
TRAINING = {**HEIGHTS["training"], "epochs": EPOCHS, "batch_size": 1}


@pytest.fixture(scope="module", params=["postgres-redis", "embedded"])
def events_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 mlflow_server: str) -> Iterator[Stack]:
    yield from authed_stack(request.param, request, tmp_path_factory.mktemp("events"),
                            mlflow_server)


@pytest.fixture(scope="module")
def api(events_stack: Stack) -> Iterator[httpx.Client]:
    with events_stack.client(headers=headers("alice")) as client:
        yield client


Event = dict[str, Any]


def stream(client: httpx.Client, job_id: str, *, last_event_id: int | None = None,
           stop_after: int | None = None) -> Iterator[Event]:
    """The stream's events ({id, event, data}); `stop_after` events, then the connection is
    dropped."""
    extra = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    seen = 0
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=extra,
                       timeout=httpx.Timeout(30, read=60)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        event: Event = {}
        for line in response.iter_lines():
            if line == "":
                if event:
                    yield event
                    seen += 1
                    if stop_after is not None and seen >= stop_after:
                        return
                event = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                event[field] = json.loads(value) if field == "data" else value


def test_every_epoch_arrives_once_in_order_and_the_stream_ends(api: httpx.Client) -> None:
    job = submit(api, spec(name="events-all", training=TRAINING))
    events = list(stream(api, job["id"]))
    ids = [int(event["id"]) for event in events]
    assert ids == sorted(set(ids)), "ids strictly increase"
    epochs = [event["data"]["epoch"] for event in events if event["event"] == "epoch"]
    assert epochs == list(range(1, EPOCHS + 1))
    assert all("loss" in event["data"] and "mae" in event["data"]
               for event in events if event["event"] == "epoch")
    statuses = [event["data"]["status"] for event in events if event["event"] == "status"]
    assert statuses == ["running", "succeeded"]
    final = events[-1]
    assert final["event"] == "status" and final["data"]["id"] == job["id"]
    assert final["data"]["progress"] == {"epoch": EPOCHS, "epochs": EPOCHS}
    assert final["data"] == api.get(f"/v1/jobs/{job['id']}").json()


def test_a_dropped_connection_resumes_with_nothing_missed_or_repeated(
        api: httpx.Client) -> None:
    job = submit(api, spec(name="events-resume", training=TRAINING))
    parts: list[list[Event]] = []
    last: int | None = None
    ended = False
    while not ended:
        parts.append(list(stream(api, job["id"], last_event_id=last, stop_after=7)))
        if parts[-1]:
            last = int(parts[-1][-1]["id"])
            ended = parts[-1][-1]["data"].get("status") in {"succeeded", "failed", "cancelled"}
    resumed = [event for part in parts for event in part]
    assert len(parts) > 2
    assert resumed == list(stream(api, job["id"])), "the resumed streams equal one replay"
    epochs = [event["data"]["epoch"] for event in resumed if event["event"] == "epoch"]
    assert epochs == list(range(1, EPOCHS + 1))
    # Past the final event there is nothing more: the stream ends at once.
    assert list(stream(api, job["id"], last_event_id=last)) == []


def test_a_cancelled_job_ends_its_stream(api: httpx.Client) -> None:
    job = submit(api, spec(name="events-cancel", training={**TRAINING, "epochs": 5000}))
    events = stream(api, job["id"])
    first_epoch = next(event for event in events if event["event"] == "epoch")
    assert first_epoch["data"]["epoch"] >= 1
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    rest = list(events)
    assert rest[-1]["event"] == "status" and rest[-1]["data"]["status"] == "cancelled"


def test_auth_and_tenancy_as_every_route(events_stack: Stack, api: httpx.Client) -> None:
    job = submit(api, spec(name="events-tenancy", training={**TRAINING, "epochs": 2}))
    path = f"/v1/jobs/{job['id']}/events"
    with events_stack.client() as anonymous:
        assert anonymous.get(path).status_code == 401
    with events_stack.client(headers=headers("bob")) as bob:
        answer = bob.get(path)
        assert answer.status_code == 404
        assert answer.json()["error"]["type"] == "not_found"
        assert bob.get("/v1/jobs/nope/events").status_code == 404
    for bad_id in ("x1", "-1", str(2**63)):
        bad = api.get(path, headers={"Last-Event-ID": bad_id})
        assert bad.status_code == 422, bad_id
        assert bad.json()["error"]["loc"] == ["header", "last-event-id"]
    assert api.get(path, headers={"Last-Event-ID": str(2**63 - 1)}).status_code == 200
