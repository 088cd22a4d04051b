"""The dry-run check behind POST /v1/specs/validate and `taas validate`."""

from __future__ import annotations

from api.services.data import check_job
from dlmodels.builder import Summary
from dlmodels.spec import DataSpec, JobSpec, ModelSpec, TrainingSpec
from dlmodels.validate import validate_model, validate_training


def check_spec(*, model: ModelSpec, training: TrainingSpec | None,
               data: DataSpec | None) -> Summary:
    if training is not None and data is not None:
        summary, _ = check_job(JobSpec(model=model, training=training, data=data))
        return summary
    summary = validate_model(model)
    if training is not None:
        validate_training(model, training, summary)
    return summary
