"""Evaluating a trained job on new data: Keras' `evaluate`, with predict's input checks."""

from __future__ import annotations

import numpy as np
import orjson
from sqlalchemy.orm import Session

from api.bodies import media_type, parse_json
from api.db import read
from api.errors import InvalidInput, NotFound
from api.schemas import EvaluateRequest
from api.services.datasets import dataset_arrays, get_dataset, parse_upload
from api.services.predict import ModelCache, cached_model
from dlmodels.data import check_inputs, to_array
from dlmodels.errors import Loc
from dlmodels.evaluation import evaluate_arrays

NPZ_TYPE = "application/x-npz"


def evaluate_job(*, job_id: str, tenant: str, cache: ModelCache, raw: bytes,
                 content_type: str) -> bytes:
    """`{loss, <metric>..., samples}` of the succeeded job's model over the body's data, as
    the answer's JSON bytes."""
    x, y, (x_loc, y_loc) = _arrays(raw, content_type, tenant)  # as predict: the body first
    loaded = cached_model(job_id=job_id, tenant=tenant, cache=cache)  # 404, 409
    model_spec = loaded.spec.model
    x = to_array(x, integer=model_spec.input_dtype == "int", loc=x_loc)
    check_inputs(x, model_spec.input_shape, loc=x_loc)
    y = to_array(y, loc=y_loc)
    return orjson.dumps(evaluate_arrays(loaded.model, x, y, loaded.spec.training, y_loc=y_loc))


def _arrays(raw: bytes, content_type: str,
            tenant: str) -> tuple[object, object, tuple[Loc, Loc]]:
    """x, y and where each came from in the request (for errors' loc)."""
    if media_type(content_type) != "application/json":
        _, (x, y) = parse_upload(content_type=content_type, body=raw, y_columns=None)
        return x, y, (("body", "x"), ("body", "y"))
    body = parse_json(EvaluateRequest, raw)
    if body.dataset_id is None:
        return body.x, body.y, (("x",), ("y",))
    dataset_id = body.dataset_id
    x, y = read(lambda session: _dataset(session, dataset_id, tenant))
    return x, y, (("dataset_id",), ("dataset_id",))


def _dataset(session: Session, dataset_id: str, tenant: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        return dataset_arrays(get_dataset(session, dataset_id=dataset_id, tenant=tenant))
    except NotFound:
        raise InvalidInput(f"no uploaded dataset {dataset_id!r}; upload one with "
                           "POST /v1/datasets", ["dataset_id"]) from None
