"""The dry-run check behind POST /v1/specs/validate and `taas validate`."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.services.data import check_job
from dlmodels.builder import Summary
from dlmodels.errors import SpecError
from dlmodels.spec import DataSpec, JobSpec, ModelSpec, TrainingSpec
from dlmodels.validate import validate_model, validate_training


def check_spec(*, model: ModelSpec, training: TrainingSpec | None, data: DataSpec | None,
               session: Session | None = None, tenant: str = "") -> Summary:
    """With `data`, a session is needed to resolve uploaded datasets (dataset_id)."""
    if training is not None and data is not None:
        if session is None and data.dataset_id is not None:
            raise SpecError("an uploaded dataset can only be checked by the service",
                            ("data", "dataset_id"))
        summary, _ = check_job(JobSpec(model=model, training=training, data=data),
                               session=session, tenant=tenant)  # type: ignore[arg-type]
        return summary
    summary = validate_model(model)
    if training is not None:
        validate_training(model, training, summary)
    return summary
