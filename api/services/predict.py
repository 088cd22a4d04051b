"""Predictions from a trained job: the model rebuilt from its spec, weights loaded as data.

Models are cached by job id (with their tenant) in a bounded LRU. Only a succeeded job has a
model and final states never change, so a cached model answers without any database query:
the request path is parse inputs -> array -> forward -> JSON bytes.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import torch
from sqlalchemy.orm import Session

from api.cache import LRUCache
from api.db import read
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


# Predictions expected to take less than this run on the event loop, longer ones in a worker
# thread. The hop there and back costs more latency than it saves and, measured with B3's
# requests (MLP 784-256-128-64-10, 4 clients), throughput too: 1,100 vs 550 req/s for 1 row,
# 580 vs 420 for 64 rows. Longer forward passes would hold up every other request (status polls).
INLINE_SECONDS = 1e-3
PROBE_ROWS = 32  # the batch whose forward pass is timed at load, besides a single row


@dataclass(frozen=True)
class ForwardCost:
    """A forward pass's time, from a 1-row and a PROBE_ROWS-row pass timed at load."""

    one: float
    many: float

    def seconds(self, rows: int) -> float:
        if rows <= PROBE_ROWS:  # between the two timings
            return self.one + (self.many - self.one) * (rows - 1) / (PROBE_ROWS - 1)
        # Beyond them, as if all of the batch's time were per row: never less than a linear
        # cost's, and never free where timer noise made the batch look as quick as one row.
        return self.many * rows / PROBE_ROWS


@dataclass(frozen=True)
class LoadedModel:
    model: SpecModel
    spec: JobSpec
    tenant: str
    cost: ForwardCost
    name: str = ""  # the job's name (the model's, once registered)

    def is_quick(self, rows: int) -> bool:
        return self.cost.seconds(rows) <= INLINE_SECONDS


ModelCache = LRUCache[LoadedModel]


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
        model = load_weights(model, weights.data)
    except (pickle.UnpicklingError, RuntimeError, ValueError, KeyError, EOFError) as error:
        # weights_only loading refuses anything but tensors: nothing in the file ran.
        raise TamperedArtifact(f"the stored weights of job {job.id} are not a weights-only "
                               f"state_dict that fits its model ({type(error).__name__}); "
                               "refusing to load them") from None
    return LoadedModel(model, spec, job.tenant, forward_cost(model, spec), job.name)


def forward_cost(model: SpecModel, spec: JobSpec) -> ForwardCost:
    """Best-of-three timings of a 1-row and a PROBE_ROWS-row forward pass (the first call also
    warms the model up). A model too slow to ever run inline is not timed further."""
    one = _best_time(model, spec, 1)
    if one > INLINE_SECONDS:
        return ForwardCost(one, one * PROBE_ROWS)
    return ForwardCost(one, _best_time(model, spec, PROBE_ROWS))


def _best_time(model: SpecModel, spec: JobSpec, rows: int) -> float:
    dtype = torch.int64 if spec.model.input_dtype == "int" else torch.float32
    batch = torch.zeros((rows, *spec.model.input_shape), dtype=dtype)
    times = []
    for _ in range(3):
        begin = time.perf_counter()
        forward(model, batch, spec.training.loss)
        times.append(time.perf_counter() - begin)
    return min(times)


def cached(cache: ModelCache, *, job_id: str, tenant: str) -> LoadedModel | None:
    """The job's model if this tenant's is in memory (no I/O: safe on the event loop)."""
    loaded = cache.get(job_id)
    return loaded if loaded is not None and loaded.tenant == tenant else None


def cached_model(*, job_id: str, tenant: str, cache: ModelCache) -> LoadedModel:
    """The job's model: from the cache when this tenant's, else checked and loaded."""
    loaded = cached(cache, job_id=job_id, tenant=tenant)
    if loaded is None:
        loaded = read(lambda session: _succeeded_model(session, job_id, tenant))
        cache.put(job_id, loaded)
    return loaded


def _succeeded_model(session: Session, job_id: str, tenant: str) -> LoadedModel:
    job = get_job(session, job_id=job_id, tenant=tenant)
    if job.status != JobStatus.succeeded:
        raise Conflict(f"job {job.id} is {job.status}; predictions need a succeeded job")
    return load_model(session, job)


def predict(loaded: LoadedModel, inputs: list[Any] | np.ndarray,
            extra: dict[str, Any] | None = None) -> bytes:
    """The model's outputs for `inputs` ([N, *input_shape], nested lists or an array) as the
    response's JSON bytes, with `extra` fields (by name: the model and version that answered)."""
    outputs, labels = run(loaded, inputs)
    # orjson writes the arrays without a Python object per number, each float32 in its
    # shortest form that reads back to the same value (half the bytes of float64 digits).
    body: dict[str, Any] = {"predictions": outputs}
    if labels is not None:
        body["labels"] = labels
    if extra:
        body.update(extra)
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def run(loaded: LoadedModel, inputs: list[Any] | np.ndarray, *,
        loc: tuple[str | int, ...] = ("inputs",)) -> tuple[np.ndarray, np.ndarray | None]:
    """Checked inputs -> (float32 outputs, int64 labels or None), as contiguous arrays."""
    model_spec = loaded.spec.model
    x = to_array(inputs, integer=model_spec.input_dtype == "int", loc=loc)
    check_inputs(x, model_spec.input_shape, loc=loc)
    outputs, labels = forward(loaded.model, torch.from_numpy(x), loaded.spec.training.loss)
    return (outputs.to(torch.float32).contiguous().numpy(),
            None if labels is None else labels.contiguous().numpy())


def counted(state: Any, loaded: LoadedModel, extra: dict[str, Any] | None) -> None:
    """Name the answered prediction in the request state for api.metrics: (model, version),
    version empty when asked by job id."""
    state["prediction"] = (str(extra["model"]), str(extra["version"])) if extra \
        else (loaded.name, "")
