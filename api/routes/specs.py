"""/v1/specs/validate: the dry run, returning the summary Keras' model.summary() shows."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep, SettingsDep, TenantDep
from api.schemas import BODY_ERRORS, V1_ERRORS, SpecCheck, errors
from api.services.jobs import check_model_size
from api.services.specs import check_spec
from dlmodels.builder import Summary

router = APIRouter(prefix="/v1/specs", tags=["specs"], responses=errors(*V1_ERRORS))


@router.post("/validate", response_model=Summary,
             responses=errors(400, *BODY_ERRORS, 422, descriptions={422: (
                 "`validation_error`, `invalid_spec` (a layer cannot take its input, the data "
                 "does not fit the model, ...) or `invalid_input` (the model is too big to run "
                 "here); `loc` points into the body.")}),
             summary="Check a model (and optionally its training and data) without running it")
def validate_spec(body: SpecCheck, session: SessionDep, tenant: TenantDep,
                  settings: SettingsDep) -> Summary:
    summary = check_spec(model=body.model, training=body.training, data=body.data,
                         session=session, tenant=tenant)
    check_model_size(summary, settings)
    return summary
