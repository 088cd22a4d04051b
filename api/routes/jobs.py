"""/v1/jobs: thin routes; the work is in api.services."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.bodies import json_body_doc, json_response, parse_json
from api.db import read
from api.deps import CacheDep, FinishedDep, SessionDep, SettingsDep, TenantDep
from api.schemas import (
    BODY_ERRORS,
    V1_ERRORS,
    EpochMetrics,
    JobCreate,
    JobOut,
    JobPage,
    JobStatusName,
    PredictRequest,
    PredictResponse,
    errors,
)
from api.services import jobs, predict
from api.services.predict import ModelCache

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=errors(*V1_ERRORS))


@router.post("", status_code=202, response_model=JobOut,
             responses=errors(400, *BODY_ERRORS, 409, 422, 429, 503, descriptions={
                 409: "`conflict`: this Idempotency-Key was already used with another spec.",
                 422: "`validation_error`, `invalid_spec` or `invalid_input` (too big to run "
                      "here): nothing was queued; `loc` points into the body.",
                 429: "`too_many_requests`: over the tenant's request rate, or its limit of "
                      "queued and running jobs.",
                 503: "`database_unavailable`, or `unavailable`: the job queue (broker) is "
                      "unreachable; nothing was stored."}),
             summary="Submit a training job (queued; 422 for a spec that cannot run)")
def submit_job(body: JobCreate, session: SessionDep, tenant: TenantDep, settings: SettingsDep,
               idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> JobOut:
    job = jobs.create_job(session, spec=body, tenant=tenant, idempotency_key=idempotency_key,
                          settings=settings)
    return jobs.job_out(job, settings)


@router.get("", response_model=JobPage, summary="List jobs, newest first")
def list_jobs(tenant: TenantDep, settings: SettingsDep,
              status: JobStatusName | None = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              cursor: Annotated[str | None, Query(max_length=200)] = None) -> JobPage:
    found, next_cursor = read(lambda session: jobs.list_jobs(
        session, tenant=tenant, status=status, limit=limit, cursor=cursor))
    return JobPage(jobs=[jobs.job_out(job, settings) for job in found], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=errors(404),
            summary="A job: status, progress, metrics")
async def get_job(job_id: str, tenant: TenantDep, settings: SettingsDep,
                  finished: FinishedDep) -> Response:
    # What polling clients call most. A finished job's answer is served from memory, with no
    # thread and no database query; any other job is read in a worker thread.
    known = jobs.finished_answer(finished, job_id=job_id, tenant=tenant)
    if known is not None:
        return json_response(known)
    return json_response(await run_in_threadpool(
        jobs.read_job, job_id=job_id, tenant=tenant, settings=settings, finished=finished))


@router.get("/{job_id}/metrics", response_model=list[EpochMetrics], responses=errors(404),
            summary="Per-epoch history: loss, val_loss and the chosen metrics")
def get_metrics(job_id: str, tenant: TenantDep) -> list[dict[str, Any]]:
    return read(lambda session: jobs.job_history(
        session, job=jobs.get_job(session, job_id=job_id, tenant=tenant)))


@router.post("/{job_id}/cancel", response_model=JobOut,
             responses=errors(*BODY_ERRORS, 404, 409, descriptions={
                 409: "`conflict`: the job already finished (succeeded, failed or cancelled)."}),
             summary="Cancel: queued jobs at once, running jobs at the next batch")
def cancel_job(job_id: str, session: SessionDep, tenant: TenantDep,
               settings: SettingsDep) -> JobOut:
    return jobs.job_out(jobs.cancel_job(session, job_id=job_id, tenant=tenant), settings)


INLINE_BODY_BYTES = 16_384  # a predict body this small is parsed on the event loop (< 0.1 ms)


@router.post("/{job_id}/predict", response_model=PredictResponse,
             response_model_exclude_none=True,
             responses=errors(*BODY_ERRORS, 404, 409, 422, 500, descriptions={
                 409: "`conflict`: the job has not succeeded (or has no stored weights).",
                 422: "`validation_error` or `invalid_spec`: inputs not shaped "
                      "[N, *input_shape], or holding NaN or Inf; `loc` points at them.",
                 500: "`artifact_integrity`: the stored weights fail their integrity check "
                      "and are not loaded; `internal_error`: a bug."}),
             openapi_extra=json_body_doc(PredictRequest),
             summary="Predictions of the trained model for inputs shaped [N, *input_shape]")
async def predict_job(job_id: str, request: Request, tenant: TenantDep,
                      cache: CacheDep) -> Response:
    # A cached model answers without the database. A small request for a quick model runs
    # right here (a thread hop costs more than its forward pass); anything else is parsed and
    # run in one worker thread.
    raw = await request.body()
    loaded = predict.cached(cache, job_id=job_id, tenant=tenant)
    if loaded is not None and len(raw) <= INLINE_BODY_BYTES:
        inputs = parse_json(PredictRequest, raw).inputs
        if loaded.is_quick(len(inputs)):
            return json_response(predict.predict(loaded, inputs))
        return json_response(await run_in_threadpool(predict.predict, loaded, inputs))
    return await run_in_threadpool(_predict, raw, job_id, tenant, cache)


def _predict(raw: bytes, job_id: str, tenant: str, cache: ModelCache) -> Response:
    body = parse_json(PredictRequest, raw)
    loaded = predict.cached_model(job_id=job_id, tenant=tenant, cache=cache)
    return json_response(predict.predict(loaded, body.inputs))
