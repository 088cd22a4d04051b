"""A browser check: the experiment taas writes to opens in MLflow 3's model-training view (runs
and their metrics), not the GenAI traces view, and a job's mlflow_url shows its run. Headless
Chromium driven by selenium (the system's chromium and chromedriver, from .ci/apt-packages)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from api.services.jobs import mlflow_url
from api.settings import Settings
from tests.integration.browser import page_text
from worker.tracking import Tracker

pytestmark = pytest.mark.integration


def test_the_experiment_opens_in_the_model_training_view(mlflow_server: str,
                                                         browser: object) -> None:
    name = f"taas-ui-{uuid.uuid4().hex[:8]}"
    tracker = Tracker(tracking_uri=mlflow_server, experiment=name, timeout=10)
    experiment_id = tracker.experiment_id()  # made as every job's experiment is made
    client = MlflowClient(mlflow_server)
    run = client.create_run(experiment_id, run_name="heights-ui-check")
    for step, loss in enumerate([900.0, 400.0, 120.0], start=1):
        client.log_metric(run.info.run_id, "loss", loss, step=step)
    client.set_terminated(run.info.run_id)

    job = SimpleNamespace(mlflow_run_id=run.info.run_id, mlflow_experiment_id=experiment_id)
    url = mlflow_url(job, Settings(mlflow_tracking_uri=mlflow_server))  # type: ignore[arg-type]
    assert url is not None
    browser.get(url)  # type: ignore[attr-defined]  # the job's link: its run, with metrics
    page = page_text(browser, "Model metrics")
    assert "heights-ui-check" in page and "loss" in page
    assert "Model registry" in page  # the model-training workflow's navigation

    # Its experiment, in the same view: the runs table (not the GenAI traces overview).
    browser.get(url.split("/runs/")[0] + "?" + url.split("?")[1])  # type: ignore[attr-defined]
    page = page_text(browser, "1 matching run")
    assert "heights-ui-check" in page
    assert "/runs" in browser.current_url  # type: ignore[attr-defined]
    assert "Token Usage" not in page
