"""Security on the real stack: one Postgres + Redis stack with auth on and small limits.

- tenants: no/unknown/revoked key -> 401 on every /v1 route; another tenant's job and dataset
  ids answer 404 everywhere (read, metrics, predict, cancel, datasets, data.dataset_id); lists
  show only your own; keys made by `taas keys create` work and are stored hashed;
- limits: model size, epochs x samples, queued+running jobs (also under a burst of concurrent
  submits), request rate, body size (Content-Length and chunked) before parsing, media type;
- Idempotency-Key: 20 concurrent submits make one job; another spec under the key is 409;
- trained weights are data: a pickle whose __reduce__ runs a command is refused and never runs,
  swapped or reshaped weights are refused with a clear error.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import os
import pickle
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import torch

from tests.integration.conftest import own_postgres_stack
from tests.integration.jobs import FINAL, HEIGHTS, spec
from tests.integration.stack import (
    ROOT,
    Stack,
)

pytestmark = pytest.mark.integration

RACERS = [f"race{i}" for i in range(4)]
KEYS = {"alice": "key-a", "bob": "key-b", "busy": "key-busy", "idem": "key-idem",
        "idem2": "key-idem2", "rate": "key-rate", "limits": "key-limits", "serve": "key-serve",
        **{tenant: f"key-{tenant}" for tenant in RACERS}}
MAX_REQUEST_BYTES = 8192
MAX_DATASET_BYTES = 4096
RATE, BURST = 20, 40
LIMITS = {
    "TAAS_MAX_CONCURRENT_JOBS": "2",
    "TAAS_MAX_PARAMS": "20000",            # HEIGHTS has 4,353
    "TAAS_MAX_EPOCH_SAMPLES": "100000",    # HEIGHTS: 10 samples
    "TAAS_RATE_LIMIT": str(RATE),
    "TAAS_RATE_BURST": str(BURST),
    "TAAS_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
    "TAAS_MAX_DATASET_BYTES": str(MAX_DATASET_BYTES),
}
QUICK = {**HEIGHTS["training"], "epochs": 5}
# ~10 batches an epoch for thousands of epochs: stays queued/running until cancelled.
LONG = {**HEIGHTS["training"], "epochs": 9000, "batch_size": 1}
HEIGHTS_X = HEIGHTS["data"]["inline"]["x"]
HEIGHTS_Y = HEIGHTS["data"]["inline"]["y"]


# --- the stack -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sec(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Postgres + Redis, one worker, the API; auth on for KEYS' tenants; small limits."""
    keys = ",".join(f"{tenant}:{key}" for tenant, key in KEYS.items())
    with own_postgres_stack(workdir=tmp_path_factory.mktemp("security"),
                            mlflow_url=mlflow_server, env=LIMITS | {"TAAS_API_KEYS": keys}) \
            as built:
        yield built


@pytest.fixture(scope="module")
def db(sec: Stack) -> Iterator[sa.Engine]:
    engine = sa.create_engine(sec.env["TAAS_DATABASE_URL"])
    yield engine
    engine.dispose()


def client(stack: Stack, tenant: str | None = None, **kwargs: Any) -> httpx.Client:
    headers = {"Authorization": f"Bearer {KEYS[tenant]}"} if tenant else {}
    return stack.client(headers=headers, **kwargs)


def api_log(stack: Stack) -> str:
    path = stack.workdir / "logs" / "api.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-30:]) if path.exists() else ""


def error_of(response: httpx.Response, status: int, stack: Stack | None = None) -> dict[str, Any]:
    context = f"\n--- api.log ---\n{api_log(stack)}" if stack is not None else ""
    assert response.status_code == status, f"{response.status_code} {response.text}{context}"
    error: dict[str, Any] = response.json()["error"]
    assert isinstance(error["type"], str) and isinstance(error["message"], str), error
    return error


def submit(c: httpx.Client, body: dict[str, Any], **kwargs: Any) -> str:
    response = c.post("/v1/jobs", json=body, **kwargs)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait(c: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """Polls gently (4 a second), well under the rate limit."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = c.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] in FINAL or time.monotonic() > deadline:
            return job
        time.sleep(0.25)


def cancel_all(c: httpx.Client) -> None:
    for status in ("queued", "running"):
        for job in c.get("/v1/jobs", params={"status": status, "limit": 500}).json()["jobs"]:
            c.post(f"/v1/jobs/{job['id']}/cancel")


@pytest.fixture(scope="module")
def alice(sec: Stack) -> dict[str, str]:
    """Alice's trained jobs (none predicted yet: not in the API's model cache) and dataset."""
    with client(sec, "alice") as c:
        ids: dict[str, str] = {}
        for batch in (("bomb", "donor"), ("swap",)):  # at most 2 in flight (the limit)
            for name in batch:  # seeds differ: the same seed would train the same weights
                ids[name] = submit(c, spec(HEIGHTS, name=f"alice-{name}", training={
                    **QUICK, "seed": len(ids)}))
            for name in batch:
                job = wait(c, ids[name])
                assert job["status"] == "succeeded", job
        response = c.post("/v1/datasets", json={"x": HEIGHTS_X, "y": HEIGHTS_Y})
        assert response.status_code == 201, response.text
        ids["dataset"] = response.json()["id"]
    return ids


# --- 1. tenants ------------------------------------------------------------------------------


def _every_route(job_id: str, dataset_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("GET", "/v1/jobs", None),
        ("POST", "/v1/jobs", spec(HEIGHTS, name="no-auth", training=QUICK)),
        ("GET", f"/v1/jobs/{job_id}", None),
        ("GET", f"/v1/jobs/{job_id}/metrics", None),
        ("POST", f"/v1/jobs/{job_id}/predict", {"inputs": [[80]]}),
        ("POST", f"/v1/jobs/{job_id}/cancel", None),
        ("POST", "/v1/datasets", {"x": [[1.5]], "y": [[2.5]]}),
        ("GET", f"/v1/datasets/{dataset_id}", None),
        ("POST", "/v1/specs/validate", {"model": HEIGHTS["model"]}),
    ]


def test_every_v1_route_needs_a_known_key_but_health_does_not(
        sec: Stack, alice: dict[str, str]) -> None:
    routes = _every_route(alice["donor"], alice["dataset"])
    with sec.client() as anonymous:
        for headers in ({}, {"Authorization": "Bearer not-a-key"},
                        {"Authorization": "Basic a2V5LWE6"}, {"Authorization": "Bearer"},
                        {"Authorization": "key-a"}):
            for method, path, body in routes:
                response = anonymous.request(method, path, json=body, headers=headers)
                error = error_of(response, 401, sec)
                assert error["type"] == "unauthorized", (method, path, headers, error)
                assert response.headers.get("www-authenticate", "").lower() == "bearer"
        for path in ("/healthz", "/readyz"):
            assert anonymous.get(path).status_code == 200, path
        # the scheme is case-insensitive (RFC 7235)
        ok = anonymous.get("/v1/jobs", headers={"Authorization": "bearer key-a"})
        assert ok.status_code == 200, ok.text
    with client(sec, "alice") as c:  # nothing the refused requests sent was stored or done
        jobs = c.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
        assert "no-auth" not in {job["name"] for job in jobs}
        assert c.get(f"/v1/jobs/{alice['donor']}").json()["status"] == "succeeded"


def test_a_body_that_does_not_parse_is_still_401_without_a_key(
        sec: Stack, alice: dict[str, str]) -> None:
    """The key check comes first: an anonymous caller learns nothing from the body parser."""
    answers = []
    with sec.client() as anonymous:
        for body in (b"{not json", b"{}", b'{"inputs": "x"}'):
            for path in ("/v1/jobs", f"/v1/jobs/{alice['donor']}/predict", "/v1/specs/validate"):
                response = anonymous.post(path, content=body,
                                          headers={"content-type": "application/json"})
                answers.append((path, body, response.status_code, response.text[:100]))
    assert all(code == 401 for *_, code, _ in answers), [a for a in answers if a[2] != 401]


def test_another_tenants_ids_answer_404_everywhere(sec: Stack, alice: dict[str, str]) -> None:
    missing = uuid.uuid4().hex
    with client(sec, "bob") as bob, client(sec, "alice") as owner:
        for job_id in (alice["donor"], alice["bomb"]):
            for method, path, body in [
                    ("GET", f"/v1/jobs/{job_id}", None),
                    ("GET", f"/v1/jobs/{job_id}/metrics", None),
                    ("POST", f"/v1/jobs/{job_id}/predict", {"inputs": [[80]]}),
                    ("POST", f"/v1/jobs/{job_id}/cancel", None)]:
                theirs = error_of(bob.request(method, path, json=body), 404, sec)
                nobodys = error_of(bob.request(method, path.replace(job_id, missing),
                                               json=body), 404, sec)
                # exactly like a missing id: no hint that the job exists
                assert theirs["type"] == nobodys["type"] == "not_found", theirs
                assert theirs["message"].replace(job_id, "ID") == \
                    nobodys["message"].replace(missing, "ID")
        assert owner.get(f"/v1/jobs/{alice['donor']}").json()["status"] == "succeeded"
        assert owner.get(f"/v1/jobs/{alice['donor']}/metrics").json()  # alice still sees hers

        # a running job of alice's: bob's cancel is 404 and leaves it alone
        long_id = submit(owner, spec(HEIGHTS, name="alice-long", training=LONG))
        error_of(bob.post(f"/v1/jobs/{long_id}/cancel"), 404, sec)
        assert owner.get(f"/v1/jobs/{long_id}").json()["status"] in ("queued", "running")
        assert owner.post(f"/v1/jobs/{long_id}/cancel").status_code == 200

        # datasets: alice's id is 404 to bob, as data too; the same arrays are bob's own copy
        dataset = alice["dataset"]
        assert owner.get(f"/v1/datasets/{dataset}").status_code == 200
        assert error_of(bob.get(f"/v1/datasets/{dataset}"), 404, sec)["type"] == "not_found"
        with_theirs = spec(HEIGHTS, name="bob-steals", training=QUICK,
                           data={"dataset_id": dataset})
        error = error_of(bob.post("/v1/jobs", json=with_theirs), 422, sec)
        assert error["loc"] == ["data", "dataset_id"], error
        assert "no uploaded dataset" in error["message"]
        check = {k: with_theirs[k] for k in ("model", "training", "data")}
        error = error_of(bob.post("/v1/specs/validate", json=check), 422, sec)
        assert error["loc"] == ["data", "dataset_id"], error
        assert owner.post("/v1/specs/validate", json=check).status_code == 200
        copy = bob.post("/v1/datasets", json={"x": HEIGHTS_X, "y": HEIGHTS_Y})
        assert copy.status_code == 201, copy.text
        assert copy.json()["id"] != dataset

        # the same Idempotency-Key is per tenant: bob's is his own job, not alice's, not 409
        a = submit(owner, spec(HEIGHTS, name="alice-idem", training=QUICK),
                   headers={"Idempotency-Key": "shared"})
        b = submit(bob, spec(HEIGHTS, name="bob-idem", training=QUICK,
                             data={"dataset_id": copy.json()["id"]}),
                   headers={"Idempotency-Key": "shared"})
        assert a != b

        # lists: only your own, whatever the filter
        alices = {job["id"] for job in owner.get("/v1/jobs", params={"limit": 500})
                  .json()["jobs"]}
        assert {alice["donor"], alice["bomb"], alice["swap"], long_id, a} <= alices
        assert b not in alices
        for status in (None, "succeeded", "cancelled", "queued", "running"):
            params: dict[str, Any] = {"limit": 500} | ({"status": status} if status else {})
            bobs = {job["id"] for job in bob.get("/v1/jobs", params=params).json()["jobs"]}
            assert not bobs & alices, status
        assert b in {job["id"] for job in bob.get("/v1/jobs").json()["jobs"]}
        assert wait(bob, b)["status"] == "succeeded"
        assert wait(owner, a)["status"] == "succeeded"


def test_a_key_made_by_the_cli_works_is_stored_hashed_and_can_be_revoked(
        sec: Stack, db: sa.Engine, alice: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "api.cli", "keys", "create", "carol"], cwd=ROOT,
                          env=sec.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1].strip()
    assert len(key) >= 32 and " " not in key, done.stdout
    headers = {"Authorization": f"Bearer {key}"}
    with sec.client(headers=headers) as carol:
        listed = carol.get("/v1/jobs")
        assert listed.status_code == 200, listed.text
        assert listed.json()["jobs"] == []  # a new tenant sees nothing of alice's
        error_of(carol.get(f"/v1/jobs/{alice['donor']}"), 404, sec)
    with db.connect() as conn:
        rows = [dict(row) for row in conn.execute(sa.text("SELECT * FROM api_keys")).mappings()]
    carols = [row for row in rows if row["tenant"] == "carol"]
    assert len(carols) == 1, rows
    assert carols[0]["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    for row in rows:  # the key itself is in no column of any row
        for value in row.values():
            assert key not in str(value), row
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE api_keys SET revoked_at = now() WHERE tenant = 'carol'"))
    # The API reuses what the database said about a key for TAAS_AUTH_CACHE_SECONDS (5).
    deadline = time.monotonic() + 5 + 3
    with sec.client(headers=headers) as carol:
        while (answer := carol.get("/v1/jobs")).status_code == 200 \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert error_of(answer, 401, sec)["type"] == "unauthorized"


# --- 2. limits -------------------------------------------------------------------------------


def _chunks(total: int, size: int = 1024) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


def test_model_size_work_body_size_and_media_type_limits(sec: Stack) -> None:
    with client(sec, "limits") as c:
        big = spec(HEIGHTS, name="too-big", training=QUICK)
        big["model"]["layers"][1]["units"] = 400  # 64*400 + 400*1 + ... > 20,000 params
        error = error_of(c.post("/v1/jobs", json=big), 422, sec)
        assert error["loc"] == ["model"] and "20,000" in error["message"], error

        work = spec(HEIGHTS, name="too-long", training={**QUICK, "epochs": 10001})
        error = error_of(c.post("/v1/jobs", json=work), 422, sec)
        assert error["loc"] == ["training", "epochs"] and "100,000" in error["message"], error

        # over the request limit: refused before parsing (the bytes are not even JSON)
        garbage = b"x" * (MAX_REQUEST_BYTES + 1)
        json_type = {"content-type": "application/json"}
        error = error_of(c.post("/v1/jobs", content=garbage, headers=json_type), 413, sec)
        assert error["type"] == "payload_too_large", error
        chunked = c.post("/v1/jobs", content=_chunks(4 * MAX_REQUEST_BYTES), headers=json_type)
        assert chunked.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in chunked.request.headers
        assert error_of(chunked, 413, sec)["type"] == "payload_too_large"
        # ...also for a valid JSON body that is merely too large
        padded = spec(HEIGHTS, name="n" * 150, training=QUICK)
        padded["data"]["inline"]["x"] = [[80.123456789]] * 400
        padded["data"]["inline"]["y"] = [[170.123456789]] * 400
        assert error_of(c.post("/v1/jobs", json=padded), 413, sec)["type"] == \
            "payload_too_large"

        # uploads: their own (larger) limit, with Content-Length and chunked
        upload_type = {"content-type": "text/csv"}
        error = error_of(c.post("/v1/datasets", content=b"a,target\n" + b"1,2\n" * 2000,
                                headers=upload_type), 413, sec)
        assert error["type"] == "payload_too_large"
        chunked = c.post("/v1/datasets", content=_chunks(4 * MAX_DATASET_BYTES),
                         headers=upload_type)
        assert chunked.request.headers.get("transfer-encoding") == "chunked"
        assert error_of(chunked, 413, sec)["type"] == "payload_too_large"
        small = c.post("/v1/datasets", content=b"a,target\n1,2\n3,4\n", headers=upload_type)
        assert small.status_code == 201, small.text

        # forms and other media types are refused before anything is parsed
        for response in (
                c.post("/v1/jobs", data={"name": "form", "model": "x"}),
                c.post("/v1/jobs", files={"spec": ("spec.json", b"{}", "application/json")}),
                c.post("/v1/jobs", content=b'{"name": "x"}', headers={"content-type":
                                                                       "text/plain"}),
                c.post("/v1/jobs/" + uuid.uuid4().hex + "/predict", data={"inputs": "1"})):
            error = error_of(response, 415, sec)
            assert error["type"] == "unsupported_media_type", error

        assert c.get("/v1/jobs").json()["jobs"] == []  # none of it made a job


def test_queued_and_running_jobs_per_tenant_are_limited(sec: Stack) -> None:
    with client(sec, "busy") as c:
        try:
            first = submit(c, spec(HEIGHTS, name="busy-1", training=LONG))
            submit(c, spec(HEIGHTS, name="busy-2", training=LONG))
            response = c.post("/v1/jobs", json=spec(HEIGHTS, name="busy-3", training=LONG))
            error = error_of(response, 429, sec)
            assert error["type"] == "too_many_requests" and "limit is 2" in error["message"]
            assert int(response.headers["retry-after"]) >= 1
            with client(sec, "bob") as bob:  # per tenant: bob is not affected
                assert bob.post("/v1/specs/validate",
                                json={"model": HEIGHTS["model"]}).status_code == 200
            assert c.post(f"/v1/jobs/{first}/cancel").status_code == 200
            submit(c, spec(HEIGHTS, name="busy-3", training=LONG))  # room again
        finally:
            cancel_all(c)


def test_the_job_limit_holds_under_concurrent_submits(sec: Stack) -> None:
    """20 submits at once, limit 2: at most 2 may be accepted. A race is a matter of luck, so
    a few rounds, each by a tenant of its own (fresh rate bucket, nothing in flight)."""
    def post(tenant: str, index: int) -> int:
        with client(sec, tenant) as c:
            barrier.wait()
            return c.post("/v1/jobs", json=spec(HEIGHTS, name=f"race-{index}",
                                                training=LONG)).status_code

    rounds = []
    for tenant in RACERS:
        barrier = threading.Barrier(20)
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            codes = list(pool.map(lambda i: post(tenant, i), range(20)))  # noqa: B023
        with client(sec, tenant) as c:
            in_flight = [job for status in ("queued", "running") for job in
                         c.get("/v1/jobs", params={"status": status}).json()["jobs"]]
            rounds.append((codes.count(202), len(in_flight), sorted(set(codes))))
            cancel_all(c)
    assert all(accepted <= 2 and flying <= 2 and set(codes) <= {202, 429}
               for accepted, flying, codes in rounds), \
        f"(accepted, queued or running, answers) per round, limit 2: {rounds}"


def test_request_rate_is_limited_per_tenant(sec: Stack) -> None:
    with client(sec, "rate") as c, client(sec, "bob") as bob:
        codes = []
        for _ in range(3 * BURST):
            response = c.get("/v1/jobs")
            codes.append(response.status_code)
            if response.status_code == 429:
                break
        assert codes[-1] == 429, codes
        assert len(codes) >= BURST, f"refused after {len(codes)} requests; burst is {BURST}"
        error = error_of(response, 429, sec)
        assert error["type"] == "too_many_requests", error
        retry_after = int(response.headers["retry-after"])
        assert 1 <= retry_after <= 5
        assert bob.get("/v1/jobs").status_code == 200  # another tenant's bucket
        assert c.get("/healthz").status_code == 200
        time.sleep(retry_after)
        assert c.get("/v1/jobs").status_code == 200


def test_predictions_are_not_throttled_by_the_control_plane_rate(sec: Stack) -> None:
    """8 clients predicting as fast as they can, at the default prediction budget, with the
    control plane limited to RATE/s: no 429; the control plane is still limited."""
    with client(sec, "serve") as c:
        job_id = c.post("/v1/jobs", json=spec(training=QUICK)).json()["id"]
        deadline = time.monotonic() + 120
        while c.get(f"/v1/jobs/{job_id}").json().get("status") not in FINAL:
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.25)  # 4 polls a second: within RATE

    def predict_many(_: int) -> list[int]:
        with client(sec, "serve") as each:
            return [each.post(f"/v1/jobs/{job_id}/predict",
                              json={"inputs": HEIGHTS_X[:2]}).status_code for _ in range(60)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = [code for codes in pool.map(predict_many, range(8)) for code in codes]
    assert codes.count(200) == len(codes) == 480, sorted(set(codes))
    with client(sec, "serve") as c:
        control = [c.get("/v1/jobs").status_code for _ in range(3 * BURST)]
    assert 429 in control


# --- 3. Idempotency-Key ----------------------------------------------------------------------


def _concurrent_same_key(stack: Stack, tenant: str, body: dict[str, Any], key: str,
                         n: int = 20) -> list[httpx.Response]:
    barrier = threading.Barrier(n)

    def post(_: int) -> httpx.Response:
        with client(stack, tenant) as c:
            barrier.wait()
            return c.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(post, range(n)))


def test_concurrent_submits_with_one_idempotency_key_make_one_job(sec: Stack) -> None:
    body = spec(HEIGHTS, name="idem-once", training=QUICK)
    responses = _concurrent_same_key(sec, "idem", body, "key-1")
    assert [r.status_code for r in responses] == [202] * 20, \
        [(r.status_code, r.text[:200]) for r in responses]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1, ids
    with client(sec, "idem") as c:
        named = [job for job in c.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
                 if job["name"] == "idem-once"]
        assert [job["id"] for job in named] == list(ids)
        again = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "key-1"})
        assert again.status_code == 202 and again.json()["id"] in ids
        other = spec(HEIGHTS, name="idem-once", training={**QUICK, "epochs": 6})
        error = error_of(c.post("/v1/jobs", json=other, headers={"Idempotency-Key": "key-1"}),
                         409, sec)
        assert error["type"] == "conflict" and "Idempotency-Key" in error["message"]
        assert wait(c, ids.pop())["status"] == "succeeded"


def test_idempotent_retries_are_not_refused_by_the_job_limit(sec: Stack) -> None:
    """With one job in flight (limit 2), the keyed job takes the last slot: its concurrent
    retries must still get that job, not a 429."""
    with client(sec, "idem2") as c:
        try:
            submit(c, spec(HEIGHTS, name="idem2-other", training=LONG))
            body = spec(HEIGHTS, name="idem2-keyed", training=LONG)
            responses = _concurrent_same_key(sec, "idem2", body, "key-2")
            codes = [r.status_code for r in responses]
            assert codes == [202] * 20, f"answers {sorted(codes)}: " + "; ".join(
                {r.text[:200] for r in responses if r.status_code != 202})
            assert len({r.json()["id"] for r in responses}) == 1
        finally:
            cancel_all(c)


# --- 4. models are data ----------------------------------------------------------------------


class _Bomb:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _set_weights(db: sa.Engine, job_id: str, data: bytes, digest: str | None = None) -> None:
    digest = digest or hashlib.sha256(data).hexdigest()
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE job_weights SET data = :data, sha256 = :digest "
                             "WHERE job_id = :id"), {"data": data, "digest": digest, "id": job_id})
        conn.execute(sa.text("UPDATE jobs SET weights_sha256 = :digest WHERE id = :id"),
                     {"digest": digest, "id": job_id})


def _weights(db: sa.Engine, job_id: str) -> tuple[bytes, str]:
    with db.connect() as conn:
        data, digest = conn.execute(sa.text("SELECT data, sha256 FROM job_weights "
                                            "WHERE job_id = :id"), {"id": job_id}).one()
    return bytes(data), digest


def test_a_pickle_bomb_in_the_weights_is_refused_and_never_runs(
        sec: Stack, db: sa.Engine, alice: dict[str, str], tmp_path: Path) -> None:
    # the payload is live: plain pickle would run it
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Bomb(probe)))  # on purpose
    assert probe.exists()

    job_id = alice["bomb"]  # never predicted: not in the API's model cache
    original, digest = _weights(db, job_id)
    marker = Path(f"/tmp/taas-pwned-{uuid.uuid4().hex}")
    buffer = io.BytesIO()
    torch.save({"layers.0.weight": _Bomb(marker)}, buffer)  # torch's zip format
    payloads = {"torch.save": buffer.getvalue(),
                "raw pickle": pickle.dumps(_Bomb(marker), protocol=2)}
    answers: dict[str, httpx.Response] = {}
    with client(sec, "alice") as c:
        try:
            for kind, payload in payloads.items():
                _set_weights(db, job_id, payload)  # the sha256 matches the bomb
                answers[kind] = c.post(f"/v1/jobs/{job_id}/predict", json={"inputs": [[80]]})
                time.sleep(0.2)
                assert not marker.exists(), f"{kind}: the pickled command ran in the API"
                assert answers[kind].status_code != 200, (kind, answers[kind].text)
                assert c.get("/healthz").status_code == 200
        finally:
            _set_weights(db, job_id, original, digest)
            marker.unlink(missing_ok=True)
        restored = c.post(f"/v1/jobs/{job_id}/predict", json={"inputs": [[80]]})
        assert restored.status_code == 200, restored.text  # the refusal was the bomb's
    # refused with a clear error about the stored weights, not a bare internal error
    unclear = {kind: (r.status_code, r.json()["error"]) for kind, r in answers.items()
               if r.json()["error"]["type"] in ("internal_error", "http_error")
               or "weights" not in r.json()["error"]["message"]}
    assert not unclear, f"{unclear}\n--- api.log ---\n{api_log(sec)}"


def test_swapped_or_reshaped_weights_are_refused(sec: Stack, db: sa.Engine,
                                                 alice: dict[str, str]) -> None:
    donor, victim = alice["donor"], alice["swap"]
    original, digest = _weights(db, victim)
    theirs, _ = _weights(db, donor)
    assert theirs != original  # trained with another seed
    with client(sec, "alice") as c:
        assert c.post(f"/v1/jobs/{donor}/predict", json={"inputs": [[80]]}).status_code == 200
        try:
            # another job's weights under this job's recorded sha256: an integrity error
            with db.begin() as conn:
                conn.execute(sa.text("UPDATE job_weights SET data = :data WHERE job_id = :id"),
                             {"data": theirs, "id": victim})
            error = error_of(c.post(f"/v1/jobs/{victim}/predict", json={"inputs": [[80]]}),
                             500, sec)
            assert error["type"] == "artifact_integrity", error
            assert "sha256" in error["message"] and victim in error["message"], error

            # a weights-only state_dict of the wrong shapes, with a matching sha256
            state = torch.load(io.BytesIO(theirs), weights_only=True)
            first = next(iter(state))
            state[first] = torch.zeros(3, 3)
            buffer = io.BytesIO()
            torch.save(state, buffer)
            _set_weights(db, victim, buffer.getvalue())
            response = c.post(f"/v1/jobs/{victim}/predict", json={"inputs": [[80]]})
            error = error_of(response, response.status_code, sec)
            assert response.status_code != 200
            assert error["type"] != "internal_error" and "weights" in error["message"], (
                f"{response.status_code} {error}\n--- api.log ---\n{api_log(sec)}")
        finally:
            _set_weights(db, victim, original, digest)
        restored = c.post(f"/v1/jobs/{victim}/predict", json={"inputs": [[80]]})
        assert restored.status_code == 200, restored.text
