"""Every MLflow call the service makes lives here.

One run per job attempt, named after the job; params are the flattened spec; metrics are
buffered and sent with `log_batch` (one call per flush, not one per metric per epoch); the model
goes to MLflow's pytorch format with a signature and is registered under the job's name.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import numpy as np
import requests
import torch
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import dlmodels
from dlmodels.builder import SpecModel
from dlmodels.spec import JobSpec
from worker.retry import with_backoff

# MLflow's client retries each request for minutes by default; this module's own retry, with
# its deadline (TAAS_TRACKING_TIMEOUT), decides instead.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
# MLflow prints a run's links to stdout when it ends; `end` logs them once instead.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

T = TypeVar("T")

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


class TrackingUnavailable(Exception):
    """MLflow stayed unreachable longer than the tracking timeout."""


# Errors that mean "MLflow is not answering", as opposed to a bug in what we send.
TRANSIENT = (MlflowException, requests.exceptions.RequestException, ConnectionError, OSError)


# MLflow 3's UI opens an experiment in the view its kind names; untagged, it may guess the
# GenAI view (a traces dashboard). taas trains models: the model-training view (runs, metrics).
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


class Tracker:
    """One job attempt's MLflow run. Metrics are buffered; a failed flush keeps them for the
    next one, and only an outage longer than `timeout` seconds fails the job."""

    def __init__(self, *, tracking_uri: str, experiment: str, timeout: float) -> None:
        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        self.experiment = experiment
        self.timeout = timeout
        self.run_id: str | None = None
        self._pending: list[Metric] = []
        self._down_since: float | None = None

    def _retry(self, call: Callable[[], T], what: str) -> T:
        try:
            return with_backoff(call, retry_on=TRANSIENT, timeout=self.timeout, what=what)
        except TRANSIENT as error:
            raise TrackingUnavailable(f"MLflow at {self.client.tracking_uri} is unreachable "
                                      f"({what}): {type(error).__name__}: {error}") from error

    def experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            if EXPERIMENT_KIND not in found.tags:  # made before taas tagged it, or by hand
                self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND,
                                               MODEL_TRAINING)
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(self.experiment,
                                                     tags={EXPERIMENT_KIND: MODEL_TRAINING}))
        except MlflowException:  # another worker created it first
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return str(found.experiment_id)

    def start(self, *, job_id: str, name: str, tenant: str, attempt: int, spec: JobSpec,
              summary_text: str, parent_run_id: str | None = None) -> tuple[str, str]:
        """The attempt's run (re-used if a retry of this attempt made it already), with params
        and the spec/summary artifacts; returns (experiment id, run id). A sweep's trial is
        the child of its sweep's run (`parent_run_id`), so the MLflow UI nests them."""
        return self._retry(lambda: self._start(job_id, name, tenant, attempt, spec,
                                               summary_text, parent_run_id), "start run")

    def _start(self, job_id: str, name: str, tenant: str, attempt: int, spec: JobSpec,
               summary_text: str, parent_run_id: str | None) -> tuple[str, str]:
        experiment_id = self.experiment_id()
        existing = self.client.search_runs(
            [experiment_id], f"tags.`taas.job_id` = '{job_id}' and "
                             f"tags.`taas.attempt` = '{attempt}'", max_results=1)
        if existing:
            self.run_id = existing[0].info.run_id
            return experiment_id, self.run_id
        tags = {"taas.job_id": job_id, "taas.attempt": str(attempt)}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
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

    def flush(self, *, final: bool = False) -> None:
        """Send buffered metrics in batches. While MLflow is down they stay buffered (training
        goes on); down for longer than the timeout, or at the final flush, it raises."""
        if final:
            self._retry(self._send, "log metrics")
            return
        try:
            self._send()
            self._down_since = None
        except TRANSIENT as error:
            self._down_since = self._down_since or time.monotonic()
            if time.monotonic() - self._down_since > self.timeout:
                raise TrackingUnavailable(f"MLflow has been unreachable for over "
                                          f"{self.timeout:g}s: {error}") from error
            log.warning("MLflow unreachable, %d metric values kept for later: %s",
                        len(self._pending), error)

    def _send(self) -> None:
        assert self.run_id is not None
        while self._pending:
            batch = self._pending[:MAX_BATCH]
            self.client.log_batch(self.run_id, metrics=batch)
            del self._pending[:len(batch)]

    def log_model(self, model: SpecModel, *, x_example: np.ndarray, registered_name: str) -> None:
        """The model in MLflow's pytorch format, with signature and input example, registered.

        `code_paths` ships dlmodels with it so `mlflow models serve` can load it anywhere;
        pip requirements are given, since inferring them runs a slow subprocess per job.
        The pickle format, not MLflow's default torch.export ("pt2"): exporting retains fake
        tensors and shape environments, ~0.3 MB of worker memory per job (0.03 with pickle,
        measured over 40 jobs), and takes longer. The service itself never loads this
        artifact: predictions use the weights-only state_dict in the database.
        """
        model.eval()
        with torch.inference_mode():
            outputs = model(torch.as_tensor(x_example)).numpy()
        signature = infer_signature(x_example, outputs)

        def log() -> None:
            # Imported here: with pytorch-lightning installed (the dev extras), importing
            # mlflow.pytorch imports Lightning too, seconds that every worker and every rank
            # of a distributed job would pay at start-up for a call made once per job.
            import mlflow.pytorch

            # Checking the input example loads the model, which puts its code path in front
            # of sys.path, once per job: a long-lived worker puts it back.
            path = list(sys.path)
            try:
                with mlflow.start_run(run_id=self.run_id):
                    mlflow.pytorch.log_model(
                        model, name="model", signature=signature, input_example=x_example,
                        registered_model_name=registered_name, serialization_format="pickle",
                        code_paths=[str(Path(dlmodels.__file__).parent)],
                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                                          f"numpy=={np.__version__}", "pydantic>=2"])
            finally:
                sys.path[:] = path

        self._retry(log, "log model")

    def end(self, status: str) -> bool:
        """FINISHED, FAILED or KILLED; False when MLflow could not be told (retry later)."""
        if self.run_id is None:
            return True
        run_id = self.run_id
        try:
            self._retry(lambda: self.client.set_terminated(run_id, status=status), "end run")
            log.info("MLflow run %s ended as %s", run_id, status)
            return True
        except TrackingUnavailable as error:
            log.warning("could not end MLflow run %s as %s: %s", run_id, status, error)
            return False


class RegistryMismatch(Exception):
    """MLflow's registry has no version for this run (its registration never happened)."""


def set_registry_alias(tracking_uri: str, *, model: str, alias: str,
                       run_id: str | None) -> None:
    """Point MLflow's registered `model`'s `alias` at the version logged by `run_id`; with
    run_id None, remove the alias. Raises TRANSIENT errors while MLflow is unreachable."""
    client = MlflowClient(tracking_uri)
    if run_id is None:
        try:
            client.delete_registered_model_alias(model, alias)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        return
    found = client.search_model_versions(f"name = '{model}' and run_id = '{run_id}'")
    if not found:
        raise RegistryMismatch(f"MLflow's registered model {model!r} has no version from "
                               f"run {run_id}")
    client.set_registered_model_alias(model, alias, found[0].version)
class SweepTracker:
    """A sweep's parent run: params are the search space, the objective and the search's
    settings; its metric is the best objective value so far, stepped by finished trials."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def start(self, *, sweep_id: str, name: str, tenant: str,
              search: dict[str, Any]) -> tuple[str, str]:
        def start() -> tuple[str, str]:
            client = self.tracker.client
            experiment_id = self.tracker.experiment_id()
            existing = client.search_runs([experiment_id],
                                          f"tags.`taas.sweep_id` = '{sweep_id}'", max_results=1)
            if existing:
                return experiment_id, str(existing[0].info.run_id)
            tags = {"taas.sweep_id": sweep_id, **({"taas.tenant": tenant} if tenant else {})}
            run = client.create_run(experiment_id, run_name=name, tags=tags)
            params = [Param(k[:250], v[:PARAM_VALUE_LIMIT]) for k, v in flatten(search)]
            for first in range(0, len(params), MAX_PARAMS):
                client.log_batch(run.info.run_id, params=params[first:first + MAX_PARAMS])
            return experiment_id, str(run.info.run_id)
        return self.tracker._retry(start, "start sweep run")

    def log_best(self, run_id: str, metric: str, value: float, trials: int) -> None:
        self.tracker._retry(lambda: self.tracker.client.log_metric(
            run_id, f"best_{metric}", value, step=trials), "log sweep best")

    def end(self, run_id: str, status: str) -> None:
        self.tracker._retry(lambda: self.tracker.client.set_terminated(run_id, status=status),
                            "end sweep run")
