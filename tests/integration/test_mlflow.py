"""What lands in MLflow for a job, and that the API predicts exactly what the worker trained."""

from __future__ import annotations

import json

import mlflow
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.integration.jobs import HEIGHTS, run, spec
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def test_a_job_is_one_mlflow_run_with_params_metrics_artifacts_and_a_registered_model(
        stack: Stack) -> None:
    name = f"heights-mlflow-{stack.kind}"
    with stack.client() as client:
        job = run(client, spec(HEIGHTS, name=name))
        history = client.get(f"/v1/jobs/{job['id']}/metrics").json()
    mlflow_client = MlflowClient(stack.mlflow_url)
    run_ = mlflow_client.get_run(job["mlflow_run_id"])
    assert run_.info.status == "FINISHED"
    assert run_.info.run_name == name
    assert run_.data.tags["taas.job_id"] == job["id"]
    experiment = mlflow_client.get_experiment(run_.info.experiment_id)
    assert experiment.name == stack.env["TAAS_MLFLOW_EXPERIMENT"]
    # MLflow 3's UI opens it in the model-training view, not the GenAI one.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    params = run_.data.params
    assert params["training.optimizer.type"] == "adam"
    assert params["model.layers.0.units"] == "64"
    assert params["data.inline.n"] == "10"
    losses = mlflow_client.get_metric_history(job["mlflow_run_id"], "loss")
    assert sorted(m.step for m in losses) == list(range(1, 101))
    by_step = {m.step: m.value for m in losses}
    assert by_step[100] == pytest.approx(history[-1]["loss"])
    assert len(mlflow_client.get_metric_history(job["mlflow_run_id"], "mae")) == 100

    artifacts = {a.path for a in mlflow_client.list_artifacts(job["mlflow_run_id"])}
    assert {"spec.json", "summary.txt"} <= artifacts
    mlflow.set_tracking_uri(stack.mlflow_url)
    spec_json = json.loads(mlflow.artifacts.load_text(f"runs:/{job['mlflow_run_id']}/spec.json"))
    assert spec_json["model"]["layers"][0]["units"] == 64
    summary = mlflow.artifacts.load_text(f"runs:/{job['mlflow_run_id']}/summary.txt")
    assert "Total params: 4,353" in summary

    versions = mlflow_client.search_model_versions(f"name='{name}'")
    assert len(versions) == 1 and versions[0].run_id == job["mlflow_run_id"]
    model_info = mlflow.models.get_model_info(f"models:/{name}/1")
    assert model_info.signature is not None
    assert model_info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] in ([-1, 1], (-1, 1))

    # The UI link opens this run.
    assert job["mlflow_url"].endswith(f"/runs/{job['mlflow_run_id']}"
                                      "?workflowType=machine_learning")
    assert f"/experiments/{run_.info.experiment_id}/" in job["mlflow_url"]


def test_api_predictions_equal_the_model_the_worker_logged(stack: Stack) -> None:
    name = f"heights-equal-{stack.kind}"
    body = spec(HEIGHTS, name=name)
    body["training"] = {**body["training"], "standardize": True, "epochs": 30}
    inputs = [[55.0], [80.0], [101.5]]
    with stack.client() as client:
        job = run(client, body)
        answer = client.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": inputs}).json()
    mlflow.set_tracking_uri(stack.mlflow_url)
    logged = mlflow.pytorch.load_model(f"models:/{name}/1")
    with torch.inference_mode():
        expected = logged(torch.tensor(inputs)).numpy()
    np.testing.assert_allclose(np.array(answer["predictions"]), expected, rtol=1e-6)
