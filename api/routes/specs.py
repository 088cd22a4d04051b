"""/v1/specs/validate: the dry run, returning the summary Keras' model.summary() shows."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep, SettingsDep, TenantDep
from api.schemas import SpecCheck
from api.services.jobs import check_model_size
from api.services.specs import check_spec
from dlmodels.builder import Summary

router = APIRouter(prefix="/v1/specs", tags=["specs"])


@router.post("/validate", response_model=Summary,
             summary="Check a model (and optionally its training and data) without running it")
def validate_spec(body: SpecCheck, session: SessionDep, tenant: TenantDep,
                  settings: SettingsDep) -> Summary:
    summary = check_spec(model=body.model, training=body.training, data=body.data,
                         session=session, tenant=tenant)
    check_model_size(summary, settings)
    return summary
