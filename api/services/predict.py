"""Predictions from a trained job: the model rebuilt from its spec, weights loaded as data.

Models are cached by job id (with their tenant) in a bounded LRU. Only a succeeded job has a
model and final states never change, so a cached model answers without any database query:
the request path is parse inputs -> array -> forward -> JSON bytes.
"""

from __future__ import annotations

import pickle
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from pydantic_core import to_json
from sqlalchemy.orm import Session, sessionmaker

from api.errors import Conflict, ServiceError
from api.models import Job, JobStatus, JobWeights
from api.services.jobs import get_job
from dlmodels.builder import SpecModel, build_model
from dlmodels.data import check_inputs, to_array
from dlmodels.serialize import load_weights, sha256
from dlmodels.spec import JobSpec
from dlmodels.training import predict as forward


class TamperedArtifact(ServiceError):
    status_code, type = 500, "artifact_integrity"


@dataclass(frozen=True)
class LoadedModel:
    model: SpecModel
    spec: JobSpec
    tenant: str


class ModelCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> LoadedModel | None:
        with self._lock:
            found = self._models.get(key)
            if found is not None:
                self._models.move_to_end(key)
            return found

    def put(self, key: str, value: LoadedModel) -> None:
        with self._lock:
            self._models[key] = value
            self._models.move_to_end(key)
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)

    def __len__(self) -> int:
        return len(self._models)


def load_model(session: Session, job: Job) -> LoadedModel:
    weights = session.get(JobWeights, job.id)
    if weights is None or job.weights_sha256 is None:
        raise Conflict(f"job {job.id} has no stored weights")
    if sha256(weights.data) != job.weights_sha256:
        raise TamperedArtifact(f"the weights of job {job.id} do not match the sha256 recorded "
                               "at training time; refusing to load them")
    spec = JobSpec.model_validate(job.spec)
    model = build_model(spec.model, loss=spec.training.loss, standardize=spec.training.standardize)
    try:
        return LoadedModel(load_weights(model, weights.data), spec, job.tenant)
    except (pickle.UnpicklingError, RuntimeError, ValueError, KeyError, EOFError) as error:
        # weights_only loading refuses anything but tensors: nothing in the file ran.
        raise TamperedArtifact(f"the stored weights of job {job.id} are not a weights-only "
                               f"state_dict that fits its model ({type(error).__name__}); "
                               "refusing to load them") from None


def cached_model(sessions: sessionmaker[Session], *, job_id: str, tenant: str,
                 cache: ModelCache) -> LoadedModel:
    """The job's model: from the cache when this tenant's, else checked and loaded."""
    loaded = cache.get(job_id)
    if loaded is not None and loaded.tenant == tenant:
        return loaded
    with sessions() as session:
        job = get_job(session, job_id=job_id, tenant=tenant)
        if job.status != JobStatus.succeeded:
            raise Conflict(f"job {job.id} is {job.status}; predictions need a succeeded job")
        loaded = load_model(session, job)
    cache.put(job_id, loaded)
    return loaded


def predict(loaded: LoadedModel, inputs: list[Any]) -> bytes:
    """The model's outputs for `inputs` ([N, *input_shape]) as the response's JSON bytes."""
    model_spec = loaded.spec.model
    x = to_array(inputs, integer=model_spec.input_dtype == "int", loc=("inputs",))
    check_inputs(x, model_spec.input_shape, loc=("inputs",))
    outputs, labels = forward(loaded.model, torch.from_numpy(x), loaded.spec.training.loss)
    body: dict[str, Any] = {"predictions": outputs.tolist()}
    if labels is not None:
        body["labels"] = labels.tolist()
    return to_json(body)
