"""Sweeps on the real stack: Optuna's study in the service's database, trials as jobs."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from standardwebhooks import Webhook as Verifier

from tests.integration.browser import check_nested
from tests.integration.conftest import StackFactory
from tests.integration.receiver import Receiver
from tests.integration.stack import Stack
from tests.integration.sweeps import (
    TRIAL_FINAL,
    heights_base,
    start,
    sweep_body,
    trials,
    wait,
    wait_for_trial,
)

pytestmark = pytest.mark.integration


def test_a_seeded_random_sweep_finds_its_best_trial(stack: Stack, browser: Any) -> None:
    body = sweep_body(base=heights_base(epochs=10))
    with stack.client() as client, Receiver() as receiver:
        hook = client.post("/v1/webhooks", json={"url": receiver.url,
                                                 "events": ["sweep.finished"]}).json()
        sweep = wait(client, start(client, body)["id"])
        assert sweep["status"] == "succeeded", sweep
        found = trials(client, sweep["id"])
        assert [t["trial"] for t in found] == list(range(8))
        assert all(t["status"] in TRIAL_FINAL for t in found)
        for t in found:
            assert 4 <= t["params"]["model.layers.0.units"] <= 32
            assert t["params"]["training.optimizer.type"] in ("adam", "rmsprop")
            assert 1e-3 <= t["params"]["training.optimizer.lr"] <= 3e-2
        values = [t["value"] for t in found if t["status"] == "succeeded"]
        best = sweep["best"]
        assert best is not None and math.isclose(best["value"], min(values))
        assert best["params"] == found[best["trial"]]["params"]
        assert sweep["trials"]["succeeded"] == len(values)

        jobs = client.get("/v1/jobs", params={"sweep_id": sweep["id"]}).json()["jobs"]
        assert sorted(job["trial"] for job in jobs) == list(range(8))
        assert {job["sweep_id"] for job in jobs} == {sweep["id"]}
        answer = client.post(f"/v1/jobs/{best['job_id']}/predict", json={"inputs": [[80]]})
        assert answer.status_code == 200, answer.text
        _check_finished_hook(receiver, hook, sweep)
        _check_promote(client, sweep, answer.json()["predictions"])
        assert client.delete(f"/v1/webhooks/{hook['id']}").status_code == 204

    runs = MlflowClient(stack.mlflow_url).search_runs(
        [sweep["mlflow_url"].split("/experiments/")[1].split("/")[0]],
        f"tags.`mlflow.parentRunId` = '{sweep['mlflow_run_id']}'")
    assert sorted(run.data.tags["taas.job_id"] for run in runs) == \
        sorted(t["job_id"] for t in found)
    # In a real browser: the sweep's run is one row in its experiment's table, the trials
    # nested under it.
    check_nested(browser, sweep["mlflow_url"], sweep["mlflow_run_id"],
                 [run.info.run_id for run in runs])


def _check_finished_hook(receiver: Receiver, hook: dict[str, Any],
                         sweep: dict[str, Any]) -> None:
    """The sweep's ending reached the receiver, signed, with the sweep as the API shows it."""
    ours: list[dict[str, Any]] = []

    def arrived() -> bool:
        payloads = [Verifier(hook["secret"]).verify(r.body, r.headers) for r in receiver.requests]
        ours[:] = [p for p in payloads if p["data"]["id"] == sweep["id"]]
        return bool(ours)
    deadline = time.monotonic() + 60
    while not arrived() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(ours) == 1 and ours[0]["type"] == "sweep.finished", ours
    assert ours[0]["data"]["status"] == "succeeded"
    assert ours[0]["data"]["best"] == sweep["best"]


def _check_promote(client: Any, sweep: dict[str, Any], predictions: Any) -> None:
    """Promoting the winner points an alias at its version, which answers as the best job."""
    promoted = client.post(f"/v1/sweeps/{sweep['id']}/promote", json={"alias": "champion"})
    assert promoted.status_code == 200, promoted.text
    found = promoted.json()
    assert (found["trial"], found["job_id"]) == (sweep["best"]["trial"], sweep["best"]["job_id"])
    model = client.get(f"/v1/models/{found['model']}").json()
    assert model["aliases"]["champion"] == found["version"]
    by_alias = client.post(f"/v1/models/{found['model']}/aliases/champion/predict",
                           json={"inputs": [[80]]})
    assert by_alias.status_code == 200, by_alias.text
    assert by_alias.json()["version"] == found["version"]
    assert by_alias.json()["predictions"] == predictions
    bad = client.post(f"/v1/sweeps/{sweep['id']}/promote", json={"alias": "latest"})
    assert bad.status_code == 422, bad.text


def test_a_clearly_bad_region_is_pruned_and_the_sweep_still_succeeds(stack: Stack) -> None:
    # lr 1e-7 stalls where 0.05 learns: after two finished trials, the median pruner stops
    # stalled ones after its 5 warm-up epochs. One trial at a time, so the seed fixes the order.
    body = sweep_body(
        base=heights_base(epochs=20),
        parameters={"training.optimizer.lr": {"type": "categorical", "choices": [0.05, 1e-7]},
                    "model.layers.0.units": {"type": "int", "low": 16, "high": 64}},
        pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 5},
        max_trials=7, max_parallel=1, sampler={"type": "random", "seed": 3})
    with stack.client() as client:
        sweep = wait(client, start(client, body)["id"])
        assert sweep["status"] == "succeeded", sweep
        found = trials(client, sweep["id"])
        pruned = [t for t in found if t["status"] == "pruned"]
        # A good trial may be pruned too (lr 0.05 can overshoot in its first epochs): that is
        # the pruner's call; the stalled ones must be among the pruned.
        assert any(t["params"]["training.optimizer.lr"] == 1e-7 for t in pruned), found
        for t in pruned:
            job = client.get(f"/v1/jobs/{t['job_id']}").json()
            assert job["status"] == "pruned" and job["error"]["type"] == "pruned"
            assert 5 <= job["progress"]["epoch"] < 20
            history = client.get(f"/v1/jobs/{t['job_id']}/metrics").json()
            assert [row["epoch"] for row in history] == list(
                range(1, job["progress"]["epoch"] + 1))
            assert t["value"] == history[-1]["loss"]
            answer = client.post(f"/v1/jobs/{t['job_id']}/predict", json={"inputs": [[80]]})
            assert answer.status_code == 409
        assert sweep["best"]["params"]["training.optimizer.lr"] == 0.05
        assert sweep["trials"]["pruned"] == len(pruned)
        listed = client.get("/v1/jobs", params={"status": "pruned", "sweep_id": sweep["id"]})
        assert len(listed.json()["jobs"]) == len(pruned)


def test_a_sampled_spec_that_cannot_run_is_a_failed_trial(stack: Stack) -> None:
    # cross_entropy cannot take the base's mae metric: those trials fail with invalid_spec,
    # the study is told, and the others still make the sweep succeed.
    body = sweep_body(
        parameters={"training.loss": {"type": "categorical", "choices": ["mse", "cross_entropy"]}},
        sampler={"type": "grid"}, max_trials=5, max_parallel=2,
        base=heights_base(epochs=5))
    with stack.client() as client:
        sweep = wait(client, start(client, body)["id"])
        found = trials(client, sweep["id"])
        assert len(found) == 2  # the grid has two points
        by_loss = {t["params"]["training.loss"]: t for t in found}
        assert by_loss["mse"]["status"] == "succeeded"
        assert by_loss["cross_entropy"]["status"] == "failed"
        job = client.get(f"/v1/jobs/{by_loss['cross_entropy']['job_id']}").json()
        assert job["error"]["type"] == "invalid_spec", job
        assert "cross_entropy" in job["error"]["message"]
        assert sweep["status"] == "succeeded" and sweep["trials"]["failed"] == 1


def long_base() -> dict[str, Any]:
    return heights_base(epochs=400, batch_size=1)


def test_cancel_leaves_every_trial_final_and_starts_none(stack: Stack) -> None:
    body = sweep_body(base=long_base(), max_trials=6, max_parallel=2)
    with stack.client() as client:
        sweep = start(client, body)
        wait_for_trial(client, sweep["id"], "running")
        response = client.post(f"/v1/sweeps/{sweep['id']}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        count = len(trials(client, sweep["id"]))
        assert count <= 2
        time.sleep(3)  # a controller turn after the cancel starts nothing
        found = trials(client, sweep["id"])
        assert len(found) == count
        assert all(t["status"] in ("cancelled", "succeeded", "failed") for t in found), found
        assert client.post(f"/v1/sweeps/{sweep['id']}/cancel").status_code == 409
        assert client.get(f"/v1/sweeps/{sweep['id']}").json()["finished_at"] is not None


KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-0123456789"}


def test_sweeps_are_checked_whole_and_belong_to_their_tenant(
        stack_factory: StackFactory) -> None:
    # No worker: everything here is answered before (or without) any trial running.
    stack = stack_factory("embedded", workers=0, env={
        "TAAS_MAX_CONCURRENT_JOBS": "4",
        "TAAS_API_KEYS": ",".join(f"{tenant}:{key}" for tenant, key in KEYS.items())})
    auth = {tenant: {"Authorization": f"Bearer {key}"} for tenant, key in KEYS.items()}
    base = heights_base()
    bad: list[tuple[dict[str, Any], list[Any]]] = [
        ({"parameters": {"model.layers.7.units": {"type": "int", "low": 1, "high": 4}}},
         ["parameters", "model.layers.7.units"]),
        ({"parameters": {"training.optimizer.nope": {"type": "float", "low": 0.1, "high": 1}}},
         ["parameters", "training.optimizer.nope"]),
        ({"parameters": {"training.optimizer.lr": {"type": "float", "low": 1, "high": 0.1}}},
         ["parameters", "training.optimizer.lr"]),
        ({"parameters": {"model.layers.0.units": {"type": "float", "low": 1.5, "high": 9.5}}},
         ["parameters", "model.layers.0.units"]),
        ({"parameters": {"training.optimizer.lr": {"type": "float", "low": 0.1, "high": 1}},
          "sampler": {"type": "grid"}}, ["parameters", "training.optimizer.lr"]),
        ({"base": {**base, "model": {**base["model"], "input_shape": [3]}}},
         ["base", "data", "inline"]),
        ({"objective": {"metric": "val_loss"}}, ["objective", "metric"]),
        ({"max_parallel": 5}, ["max_parallel"]),
        ({"max_trials": 10**6}, ["max_trials"]),
    ]
    with stack.client(headers=auth["alice"]) as alice, \
            stack.client(headers=auth["bob"]) as bob:
        for change, loc in bad:
            response = alice.post("/v1/sweeps", json=sweep_body(**change))
            assert response.status_code == 422, (change, response.text)
            assert response.json()["error"]["loc"][:len(loc)] == loc, (change, response.text)
        assert alice.get("/v1/sweeps").json()["sweeps"] == []

        sweep = start(alice, sweep_body())
        assert sweep["status"] == "queued" and sweep["best"] is None
        for path in (f"/v1/sweeps/{sweep['id']}", f"/v1/sweeps/{sweep['id']}/trials"):
            assert bob.get(path).status_code == 404
            assert alice.get(path).status_code == 200
        assert bob.post(f"/v1/sweeps/{sweep['id']}/cancel").status_code == 404
        assert bob.get("/v1/sweeps").json()["sweeps"] == []
        assert [s["id"] for s in alice.get("/v1/sweeps").json()["sweeps"]] == [sweep["id"]]
        assert alice.post(f"/v1/sweeps/{sweep['id']}/cancel").json()["status"] == "cancelled"
        assert alice.post(f"/v1/sweeps/{sweep['id']}/cancel").status_code == 409


@pytest.mark.parametrize("kind", ["postgres-redis", "embedded"])
def test_duplicate_turns_and_a_killed_worker_never_break_the_limits(
        stack_factory: StackFactory, kind: str) -> None:
    """On Postgres the turn's lock is an advisory lock; on the embedded default a file lock."""
    from api.queue import SWEEP_TASK, make_celery
    from api.settings import Settings
    from tests.integration.test_faults import FAULT_ENV, worker_children

    stack = stack_factory(kind, env={**FAULT_ENV, "TAAS_WORKER_THREADS": "1"}, workers=2)
    app = make_celery(Settings(broker_url=stack.env.get("TAAS_BROKER_URL"),
                               data_dir=Path(stack.env["TAAS_DATA_DIR"])))
    body = sweep_body(base=heights_base(epochs=60, batch_size=1), max_trials=5,
                      max_parallel=2)
    with stack.client() as client:
        sweep = start(client, body)
        for _ in range(20):  # duplicate and concurrent deliveries of the controller's turn
            app.send_task(SWEEP_TASK, args=[sweep["id"]], queue="cpu")
        killed = False
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            found = trials(client, sweep["id"])
            in_flight = [t for t in found if t["status"] in ("queued", "running")]
            assert len(in_flight) <= 2 and len(found) <= 5, found
            if not killed and any(t["status"] == "running" for t in found):
                for name in ("worker0", "worker1"):  # mid-trial, no goodbye
                    for pid in worker_children(stack, name):
                        os.kill(pid, signal.SIGKILL)
                killed = True
            state = client.get(f"/v1/sweeps/{sweep['id']}").json()
            if state["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.1)
        assert killed and state["status"] == "succeeded", state
        found = trials(client, sweep["id"])
        assert len(found) == 5 and all(t["status"] in TRIAL_FINAL for t in found), found
        attempts = [client.get(f"/v1/jobs/{t['job_id']}").json()["attempt"] for t in found]
        assert max(attempts) >= 2, attempts  # the killed trial ran again
    app.close()
