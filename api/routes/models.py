"""/v1/models: registered models by name, their versions and aliases; thin routes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.bodies import NPY_TYPE, json_body_doc, json_response, media_type
from api.db import read
from api.deps import CacheDep, DirectoryDep, SessionDep, TenantDep
from api.directory import ModelDirectory, Ref
from api.fast_predict import answer, parse_inputs
from api.schemas import (
    BODY_ERRORS,
    V1_ERRORS,
    AliasSet,
    ModelOut,
    ModelPredictResponse,
    ModelSummary,
    PredictRequest,
    errors,
)
from api.services import models, predict
from api.services.predict import ModelCache

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


PREDICT_DOC: dict[str, Any] = dict(
    response_model=ModelPredictResponse, response_model_exclude_none=True,
    responses=errors(*BODY_ERRORS, 404, 422, 500, descriptions={
        404: "`not_found`: no such model, version or alias (another tenant's names answer "
             "the same).",
        422: "`validation_error` or `invalid_spec`: inputs not shaped [N, *input_shape], or "
             "holding NaN or Inf; `invalid_input`: an unreadable .npy body.",
        500: "`artifact_integrity`: the stored weights fail their integrity check."}),
    openapi_extra=json_body_doc(PredictRequest, binary=(NPY_TYPE,)),
    description="The same bodies, checks and answers as `POST /v1/jobs/{job_id}/predict`, "
                "plus `model` and the `version` that answered.")


@router.post("/{name}/predict", summary="Predict with the latest version", **PREDICT_DOC)
async def predict_latest(name: str, request: Request, tenant: TenantDep, cache: CacheDep,
                         directory: DirectoryDep) -> Response:
    return await _predict(request, tenant, cache, directory, name, None)


@router.post("/{name}/versions/{version}/predict", summary="Predict with a version",
             **PREDICT_DOC)
async def predict_version(name: str, version: int, request: Request, tenant: TenantDep,
                          cache: CacheDep, directory: DirectoryDep) -> Response:
    return await _predict(request, tenant, cache, directory, name, version)


@router.post("/{name}/aliases/{alias}/predict", summary="Predict with the version an alias "
             "names", **PREDICT_DOC)
async def predict_alias(name: str, alias: str, request: Request, tenant: TenantDep,
                        cache: CacheDep, directory: DirectoryDep) -> Response:
    return await _predict(request, tenant, cache, directory, name, alias)


async def _predict(request: Request, tenant: str, cache: ModelCache,
                   directory: ModelDirectory, name: str, ref: Ref) -> Response:
    # Requests for a model in memory are mostly answered by api.fast_predict; this route
    # resolves names this process has not seen yet, loads models, and answers the rest.
    raw = await request.body()
    npy = media_type(request.headers.get("content-type", "")) == NPY_TYPE
    job_id, version = await run_in_threadpool(directory.resolve, tenant, name, ref)
    extra = {"model": name, "version": version}
    loaded = predict.cached(cache, job_id=job_id, tenant=tenant)
    if loaded is None:
        inputs = await run_in_threadpool(parse_inputs, raw, npy=npy)
        loaded = await run_in_threadpool(
            lambda: predict.cached_model(job_id=job_id, tenant=tenant, cache=cache))
        body = await run_in_threadpool(predict.predict, loaded, inputs, extra)
    else:
        body = await answer(loaded, raw, npy=npy, extra=extra)
    predict.counted(request.scope["state"], loaded, extra)
    return json_response(body)
