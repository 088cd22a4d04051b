"""Every MLflow call the service makes lives here.

One run per job attempt, named after the job; params are the flattened spec; metrics are
buffered and sent with `log_batch` (one call per flush, not one per metric per epoch); the model
goes to MLflow's pytorch format with a signature and is registered under the job's name.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import numpy as np
import torch
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import dlmodels
from dlmodels.builder import SpecModel
from dlmodels.spec import JobSpec

log = logging.getLogger("taas.tracking")

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
MAX_PARAMS = 100  # ... and of params per call
PARAM_VALUE_LIMIT = 6000


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """{"a": {"b": [1, 2]}} -> ("a.b", "[1, 2]"); lists of objects are indexed, others kept."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
        for index, item in enumerate(value):
            yield from flatten(item, f"{prefix}.{index}")
    else:
        yield prefix, json.dumps(value) if not isinstance(value, str) else value


def spec_params(spec: JobSpec) -> dict[str, str]:
    data = spec.model_dump(mode="json", exclude_none=True)
    inline = data["data"].pop("inline", None)
    if inline is not None:  # the data themselves are no parameter; their size is
        data["data"]["inline"] = {"n": len(inline["x"])}
    return {key[:250]: text[:PARAM_VALUE_LIMIT] for key, text in flatten(data)}


class Tracker:
    def __init__(self, *, tracking_uri: str, experiment: str) -> None:
        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        self.experiment = experiment
        self.run_id: str | None = None
        self._pending: list[Metric] = []

    def experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(self.experiment))
        except MlflowException:  # another worker created it first
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return str(found.experiment_id)

    def start(self, *, job_id: str, name: str, tenant: str, attempt: int, spec: JobSpec,
              summary_text: str) -> tuple[str, str]:
        """Create the run with its params and spec/summary artifacts; returns (exp id, run id)."""
        experiment_id = self.experiment_id()
        tags = {"taas.job_id": job_id, "taas.attempt": str(attempt)}
        if tenant:
            tags["taas.tenant"] = tenant
        run = self.client.create_run(experiment_id, run_name=name, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, v) for k, v in spec_params(spec).items()]
        for start in range(0, len(params), MAX_PARAMS):
            self.client.log_batch(self.run_id, params=params[start:start + MAX_PARAMS])
        self.client.log_text(self.run_id, spec.model_dump_json(indent=2, exclude_none=True),
                             "spec.json")
        self.client.log_text(self.run_id, summary_text, "summary.txt")
        return experiment_id, self.run_id

    def add_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self._pending += [Metric(key, float(value), now, epoch) for key, value in logs.items()]

    def flush(self) -> None:
        assert self.run_id is not None
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=pending[start:start + MAX_BATCH])

    def log_model(self, model: SpecModel, *, x_example: np.ndarray, registered_name: str) -> None:
        """The model in MLflow's pytorch format, with signature and input example, registered.

        `code_paths` ships dlmodels with it so `mlflow models serve` can load it anywhere;
        pip requirements are given, since inferring them runs a slow subprocess per job.
        """
        model.eval()
        with torch.inference_mode():
            outputs = model(torch.as_tensor(x_example)).numpy()
        signature = infer_signature(x_example, outputs)
        with mlflow.start_run(run_id=self.run_id):
            mlflow.pytorch.log_model(
                model, name="model", signature=signature, input_example=x_example,
                registered_model_name=registered_name,
                code_paths=[str(Path(dlmodels.__file__).parent)],
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                                  f"numpy=={np.__version__}", "pydantic>=2"],
            )

    def end(self, status: str) -> None:
        """status: FINISHED, FAILED or KILLED."""
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=RunStatus.to_string(
                getattr(RunStatus, status)))
