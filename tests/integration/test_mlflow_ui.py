"""A browser check: the experiment taas writes to opens in MLflow 3's model-training view (runs
and their metrics), not the GenAI traces view, and a job's mlflow_url shows its run. Headless
Chromium driven by selenium (the system's chromium and chromedriver, from .ci/apt-packages)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from api.services.jobs import mlflow_url
from api.settings import Settings
from tests.integration.conftest import _unreachable
from worker.tracking import Tracker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        _unreachable("chromium and chromedriver (install them with .ci/apt-packages)",
                     FileNotFoundError("not on PATH"))
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _page_text(driver: object, containing: str, timeout: float = 90) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def text(d: object) -> str | bool:
        found: str = d.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
        return found if containing in found else False

    return WebDriverWait(driver, timeout).until(text)  # type: ignore[arg-type, no-any-return]


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
    page = _page_text(browser, "Model metrics")
    assert "heights-ui-check" in page and "loss" in page
    assert "Model registry" in page  # the model-training workflow's navigation

    # Its experiment, in the same view: the runs table (not the GenAI traces overview).
    browser.get(url.split("/runs/")[0] + "?" + url.split("?")[1])  # type: ignore[attr-defined]
    page = _page_text(browser, "1 matching run")
    assert "heights-ui-check" in page
    assert "/runs" in browser.current_url  # type: ignore[attr-defined]
    assert "Token Usage" not in page
