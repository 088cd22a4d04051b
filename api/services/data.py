"""Resolving a spec's `data` into arrays, and checking a whole job spec before it is queued."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.errors import NotFound
from api.services.datasets import dataset_arrays, get_dataset
from dlmodels.builder import Summary
from dlmodels.data import to_array
from dlmodels.datasets import load_builtin
from dlmodels.errors import SpecError
from dlmodels.registry import UnknownNameError
from dlmodels.spec import DataSpec, JobSpec, ModelSpec
from dlmodels.validate import (
    validate_data_shapes,
    validate_labels,
    validate_model,
    validate_training,
)

Arrays = tuple[np.ndarray, np.ndarray]


def load_arrays(data: DataSpec, *, model: ModelSpec, session: Session, tenant: str) -> Arrays:
    integer = model.input_dtype == "int"
    if data.inline is not None:
        x = to_array(data.inline.x, integer=integer, loc=("data", "inline", "x"))
        y = to_array(data.inline.y, loc=("data", "inline", "y"))
        return x, y
    if data.builtin is not None:
        return _builtin(data.builtin.name, tuple(sorted(data.builtin.options.items())))
    assert data.dataset_id is not None
    try:
        x, y = dataset_arrays(get_dataset(session, dataset_id=data.dataset_id, tenant=tenant))
    except NotFound:
        raise SpecError(f"no uploaded dataset {data.dataset_id!r}; upload one with "
                        "POST /v1/datasets", ("data", "dataset_id")) from None
    if integer and x.dtype.kind == "f":
        x = to_array(x, integer=True, loc=("data", "dataset_id"))
    return x, y


@lru_cache(maxsize=16)
def _builtin(name: str, options: tuple[tuple[str, object], ...]) -> Arrays:
    """Builtin datasets are pure functions of (name, options), so they are loaded once."""
    try:
        dataset = load_builtin(name, dict(options))
    except UnknownNameError as error:
        raise SpecError(str(error), ("data", "builtin", "name")) from None
    except ValidationError as error:
        first = error.errors()[0]
        raise SpecError(f"{name} options: {first['msg']}",
                        ("data", "builtin", "options", *first["loc"])) from None
    dataset.x.setflags(write=False)
    dataset.y.setflags(write=False)
    return dataset.x, dataset.y


def check_job(spec: JobSpec, *, session: Session, tenant: str) -> tuple[Summary, Arrays]:
    """Everything that can be known wrong before training: a SpecError points at the field."""
    summary = validate_model(spec.model)
    validate_training(spec.model, spec.training, summary)
    x, y = load_arrays(spec.data, model=spec.model, session=session, tenant=tenant)
    loc = data_loc(spec.data)
    validate_data_shapes(spec.model, spec.training, summary, list(x.shape), list(y.shape), loc)
    validate_labels(spec.training, summary, y, (*loc, "y") if spec.data.inline else loc)
    _check_token_ids(spec.model, x, loc)
    return summary.model_copy(update={"processes": spec.training.processes}), (x, y)


def data_loc(data: DataSpec) -> tuple[str, ...]:
    if data.inline is not None:
        return ("data", "inline")
    return ("data", "builtin") if data.builtin is not None else ("data", "dataset_id")


def _check_token_ids(model: ModelSpec, x: np.ndarray, loc: tuple[str, ...]) -> None:
    first = model.layers[0]
    limit = getattr(first, "num_embeddings", None)
    if model.input_dtype == "int" and limit is not None and (x.min() < 0 or x.max() >= limit):
        raise SpecError(f"token ids must lie in 0..{limit - 1} (embedding num_embeddings "
                        f"{limit}) but x holds {x.min()}..{x.max()}", loc)
