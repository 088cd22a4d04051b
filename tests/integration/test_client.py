"""The Python client (taas.Client) and the `taas` CLI against the real stack (the embedded
default, auth on): fit and predict from numpy, a submit-and-watch that sees every epoch, each
error type, the CLI's exit codes and --json, and its terminal output under a pseudo-terminal
(pexpect): the live bar, Ctrl-C detaching, reattaching."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pexpect
import pytest

import taas
from taas import errors
from tests.integration.authed import KEYS, authed_stack
from tests.integration.jobs import HEIGHTS, spec
from tests.integration.stack import Stack, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
X = np.asarray(HEIGHTS["data"]["inline"]["x"], dtype=np.float32)
Y = np.asarray(HEIGHTS["data"]["inline"]["y"], dtype=np.float32)
QUICK = {**HEIGHTS["training"], "epochs": 12}
# ~10 batches an epoch for thousands of epochs: runs until cancelled.
LONG = {**HEIGHTS["training"], "epochs": 9000, "batch_size": 1}
MAX_REQUEST_BYTES = 200_000
ANSI = r"(?:\x1b\[[0-9;]*m)*"  # rich's styles between words


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          mlflow_server: str) -> Iterator[Stack]:
    yield from authed_stack("embedded", request, tmp_path_factory.mktemp("client"),
                            mlflow_server, {"TAAS_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES)})


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[taas.Client]:
    with taas.Client(stack.api_url, KEYS["alice"]) as made:
        yield made


def cli_env(stack: Stack) -> dict[str, str]:
    return {**os.environ, "TAAS_URL": stack.api_url, "TAAS_API_KEY": KEYS["alice"],
            "COLUMNS": "120"}


def taas_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """`taas ARGS` with stdout a pipe (so machine output)."""
    return subprocess.run([sys.executable, "-m", "taas", *args], cwd=ROOT, env=cli_env(stack),
                          capture_output=True, text=True, timeout=300)


def spec_file(tmp_path: Path, body: dict[str, Any], name: str = "spec.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(body))
    return str(path)


# --- the SDK -----------------------------------------------------------------------------


def test_fit_predict_and_history_from_numpy(client: taas.Client) -> None:
    job = client.fit(model=HEIGHTS["model"], training=QUICK, x=X, y=Y, name="sdk-fit",
                     progress=False)
    assert job.status == "succeeded" and job.done
    assert job.progress == {"epoch": 12, "epochs": 12}
    predictions = job.predict(X[:3])
    assert isinstance(predictions, np.ndarray) and predictions.shape == (3, 1)
    history = job.history
    assert [row["epoch"] for row in history] == list(range(1, 13))
    assert history[-1]["loss"] == job.metrics["loss"]
    assert job.refresh().data == client.job(job.id).data


def test_wait_follows_every_epoch(client: taas.Client) -> None:
    job = client.submit(spec(name="sdk-wait", training=QUICK))
    assert job.status == "queued"
    seen: list[taas.Event] = []
    assert job.wait(progress=False, on_event=seen.append) is job
    assert job.status == "succeeded"
    assert [e.data["epoch"] for e in seen if e.type == "epoch"] == list(range(1, 13))
    assert [e.id for e in seen] == sorted({e.id for e in seen})


def test_cancel_and_a_failed_fit(client: taas.Client) -> None:
    job = client.submit(spec(name="sdk-cancel", training=LONG))
    assert job.cancel().status == "cancelled"
    diverging = {**QUICK, "optimizer": {"type": "sgd", "lr": 5.0}}
    with pytest.raises(errors.JobFailed) as failed:
        client.fit(model=HEIGHTS["model"], training=diverging, x=X, y=Y, progress=False)
    assert failed.value.job.status == "failed"
    assert failed.value.job.error["type"] == "training_diverged"


def test_each_error_type(stack: Stack, client: taas.Client) -> None:
    with pytest.raises(errors.NotFound) as missing:
        client.job("nope")
    assert missing.value.status == 404 and "nope" in missing.value.message
    with pytest.raises(errors.Unauthorized):
        taas.Client(stack.api_url, "wrong-key").jobs()
    bad_layer = spec(name="bad")
    bad_layer["model"] = {**HEIGHTS["model"], "layers": [{"type": "dense", "units": 0}]}
    with pytest.raises(errors.ValidationError) as invalid:
        client.submit(bad_layer)
    assert invalid.value.loc == ["model", "layers", 0, "units"]
    assert invalid.value.errors and isinstance(invalid.value, errors.InvalidRequest)
    conv = spec(name="bad-shape")
    conv["model"] = {"input_shape": [1], "layers": [{"type": "conv2d", "filters": 2,
                                                     "kernel_size": 3}]}
    with pytest.raises(errors.InvalidSpec) as shape:
        client.submit(conv)
    assert shape.value.loc == ["model", "layers", 0]
    with pytest.raises(errors.InvalidInput):
        client.request("GET", "/v1/jobs", params={"cursor": "%%%"})
    finished = client.jobs(status="succeeded", limit=1)[0]
    with pytest.raises(errors.Conflict):
        finished.cancel()
    with pytest.raises(errors.PayloadTooLarge):
        finished.predict(np.zeros((MAX_REQUEST_BYTES // 4, 1), dtype=np.float32))
    with pytest.raises(errors.ConnectionFailed) as down:
        taas.Client(f"http://127.0.0.1:{free_port()}").jobs()
    assert "127.0.0.1" in str(down.value) and "taas up" in str(down.value)


# --- the CLI, machine output -------------------------------------------------------------


def test_submit_watch_json_sees_every_epoch(stack: Stack, tmp_path: Path) -> None:
    result = taas_cli(stack, "submit", spec_file(tmp_path, spec(name="cli-watch",
                                                                  training=QUICK)), "--watch")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["event"] == "submitted"
    assert [line["data"]["epoch"] for line in lines if line["event"] == "epoch"] == \
        list(range(1, 13))
    assert lines[-1]["event"] == "status" and lines[-1]["data"]["status"] == "succeeded"
    job_id = lines[0]["data"]["id"]

    shown = taas_cli(stack, "show", job_id)
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "succeeded"
    listed = json.loads(taas_cli(stack, "jobs", "--limit", "3").stdout)
    assert job_id in {job["id"] for job in listed}
    history = json.loads(taas_cli(stack, "metrics", job_id).stdout)
    assert len(history) == 12
    for name, content in (("in.json", json.dumps([[80], [70]])), ("in.csv", "weight\n80\n70\n")):
        (tmp_path / name).write_text(content)
    np.save(tmp_path / "in.npy", np.asarray([[80], [70]], dtype=np.float32))
    answers = [json.loads(taas_cli(stack, "predict", job_id, str(tmp_path / name)).stdout)
               for name in ("in.json", "in.csv", "in.npy")]
    assert answers[0] == answers[1] == answers[2]
    assert len(answers[0]["predictions"]) == 2
    (tmp_path / "data.json").write_text(json.dumps({"x": X.tolist(), "y": Y.tolist()}))
    uploaded = taas_cli(stack, "datasets", "upload", str(tmp_path / "data.json"))
    assert uploaded.returncode == 0 and json.loads(uploaded.stdout)["n"] == 10


def test_exit_codes(stack: Stack, client: taas.Client, tmp_path: Path) -> None:
    diverging = spec(name="cli-fails", training={**QUICK, "optimizer": {"type": "sgd",
                                                                          "lr": 5.0}})
    assert taas_cli(stack, "submit", spec_file(tmp_path, diverging), "-w").returncode == 1
    bad = spec(name="cli-bad", training={**QUICK, "epochs": 0})
    invalid = taas_cli(stack, "submit", spec_file(tmp_path, bad))
    assert invalid.returncode == 2
    assert json.loads(invalid.stdout)["error"]["loc"] == ["training", "epochs"]
    assert taas_cli(stack, "submit", str(tmp_path / "missing.json")).returncode == 2
    long = client.submit(spec(name="cli-cancelled", training=LONG))
    threading.Timer(3, long.cancel).start()
    assert taas_cli(stack, "watch", long.id).returncode == 3
    assert taas_cli(stack, "cancel", long.id).returncode == 5  # already final: 409
    assert taas_cli(stack, "show", "nope").returncode == 5
    refused = subprocess.run([sys.executable, "-m", "taas", "--url",
                              f"http://127.0.0.1:{free_port()}", "jobs"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 6
    assert "taas up" in refused.stderr and "127.0.0.1" in refused.stderr


# --- the CLI on a terminal ---------------------------------------------------------------


def spawn(stack: Stack, *args: str) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-m", "taas", *args], cwd=str(ROOT),
                         env=cli_env(stack), encoding="utf-8", timeout=120,
                         dimensions=(30, 120))


def test_terminal_bar_then_summary(stack: Stack, tmp_path: Path) -> None:
    child = spawn(stack, "submit", "--watch", spec_file(tmp_path, spec(name="tty-watch",
                                                                        training=QUICK)))
    child.expect(r"submitted job (\w+)")
    child.expect(r"12/12")  # the bar by epoch
    child.expect(f"succeeded{ANSI} after 12/12 epochs")
    child.expect("predict: taas predict")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    jobs_table = spawn(stack, "jobs", "--limit", "5")
    jobs_table.expect("tty-watch")
    jobs_table.expect(pexpect.EOF)
    assert "{" not in (jobs_table.before or "")  # a table, not JSON, on a terminal


def test_ctrl_c_detaches_and_watch_reattaches(stack: Stack, client: taas.Client,
                                              tmp_path: Path) -> None:
    child = spawn(stack, "submit", "-w", spec_file(tmp_path, spec(name="tty-detach",
                                                                  training=LONG)))
    child.expect(r"submitted job (\w+)")
    job_id = child.match.group(1)
    child.expect(r"\d+/9000")  # running, the bar moves
    child.sendintr()
    child.expect(f"Reattach: taas watch {job_id}")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert client.job(job_id).status in ("queued", "running"), "detaching does not cancel"
    again = spawn(stack, "watch", job_id)
    again.expect(r"\d+/9000")
    time.sleep(0.5)
    client.job(job_id).cancel()
    again.expect(f"cancelled{ANSI} after")
    again.expect(pexpect.EOF)
    again.close()
    assert again.exitstatus == 3


def test_metrics_table_and_chart_on_a_terminal(stack: Stack, client: taas.Client) -> None:
    job = client.jobs(status="succeeded", limit=1)[0]
    child = spawn(stack, "metrics", job.id)
    child.expect("epoch")
    child.expect(r"\* loss")  # the chart's legend
    child.expect(pexpect.EOF)


def test_events_stream_reconnects_after_a_dropped_connection(client: taas.Client) -> None:
    job = client.submit(spec(name="sdk-resume", training={**QUICK, "epochs": 40}))
    first = list(_take(client.events(job.id), 5))
    rest = list(client.events(job.id, last_event_id=first[-1].id))
    epochs = [e.data["epoch"] for e in first + rest if e.type == "epoch"]
    assert epochs == list(range(1, 41))


def _take(events: Iterator[taas.Event], n: int) -> Iterator[taas.Event]:
    for index, event in enumerate(events):
        yield event
        if index + 1 == n:
            return




# --- webhooks and evaluate, from the SDK and the CLI --------------------------------------


def test_webhooks_from_the_sdk_and_the_cli(stack: Stack, client: taas.Client) -> None:
    from standardwebhooks import Webhook as Verifier

    from tests.integration.receiver import Receiver

    with Receiver() as receiver:
        hook = client.create_webhook(receiver.url, events=["job.succeeded"])
        assert hook["secret"].startswith("whsec_") and hook["events"] == ["job.succeeded"]
        job = client.submit(spec(name="sdk-hook", training=QUICK)).wait(progress=False)
        (delivery,) = receiver.wait_for(1)
        event = Verifier(hook["secret"]).verify(delivery.body, delivery.headers)
        assert (event["type"], event["data"]["id"]) == ("job.succeeded", job.id)
        listed = json.loads(taas_cli(stack, "webhooks", "list").stdout)
        assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
        sent = json.loads(taas_cli(stack, "webhooks", "deliveries", hook["id"]).stdout)
        assert [(d["type"], d["status"]) for d in sent] == [("job.succeeded", "delivered")]
        made = taas_cli(stack, "webhooks", "create", receiver.url, "--event", "job.failed")
        assert made.returncode == 0, made.stderr
        second = json.loads(made.stdout)
        assert second["secret"].startswith("whsec_") and second["events"] == ["job.failed"]
        for hook_id in (hook["id"], second["id"]):
            assert taas_cli(stack, "webhooks", "delete", hook_id).returncode == 0
        assert client.webhooks() == []
        gone = taas_cli(stack, "webhooks", "delete", hook["id"])
        assert gone.returncode == 5 and "not_found" in gone.stdout + gone.stderr


def test_evaluate_from_the_sdk_and_the_cli(stack: Stack, client: taas.Client,
                                          tmp_path: Path) -> None:
    job = client.fit(model=HEIGHTS["model"], training={**QUICK, "metrics": ["mae"]}, x=X, y=Y,
                     name="sdk-evaluate", progress=False)
    found = job.evaluate(X, Y)
    assert found["samples"] == len(X) and set(found) >= {"loss", "mae"}
    data = spec_file(tmp_path, {"x": X.tolist(), "y": Y.tolist()}, "data.json")
    answer = taas_cli(stack, "evaluate", job.id, data)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == pytest.approx(found)
