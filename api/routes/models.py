"""/v1/models: registered models by name, their versions and aliases; thin routes."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.db import read
from api.deps import SessionDep, TenantDep
from api.schemas import BODY_ERRORS, V1_ERRORS, AliasSet, ModelOut, ModelSummary, errors
from api.services import models

router = APIRouter(prefix="/v1/models", tags=["models"], responses=errors(*V1_ERRORS))


@router.get("", response_model=list[ModelSummary],
            summary="The tenant's registered models, with latest version and aliases")
def list_models(tenant: TenantDep) -> list[dict[str, object]]:
    return read(lambda session: models.list_models(session, tenant=tenant))


@router.get("/{name}", response_model=ModelOut, responses=errors(404),
            summary="A model's versions (job, time, final metrics) and aliases")
def get_model(name: str, tenant: TenantDep) -> dict[str, object]:
    return read(lambda session: models.get_model(session, tenant=tenant, name=name))


@router.put("/{name}/aliases/{alias}", response_model=ModelOut,
            responses=errors(*BODY_ERRORS, 404),
            summary="Point an alias at a version (MLflow's registry follows)")
def set_alias(name: str, alias: str, body: AliasSet, session: SessionDep,
              tenant: TenantDep) -> dict[str, object]:
    models.set_alias(session, tenant=tenant, name=name, alias=alias, version=body.version)
    return models.get_model(session, tenant=tenant, name=name)


@router.delete("/{name}/aliases/{alias}", status_code=204, responses=errors(404),
               summary="Remove an alias")
def delete_alias(name: str, alias: str, session: SessionDep, tenant: TenantDep) -> Response:
    models.delete_alias(session, tenant=tenant, name=name, alias=alias)
    return Response(status_code=204)
