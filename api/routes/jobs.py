"""/v1/jobs: thin routes; the work is in api.services."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.bodies import NPY_TYPE, json_body_doc, json_response, media_type
from api.db import read
from api.deps import CacheDep, FinishedDep, ReaderDep, SessionDep, SettingsDep, TenantDep
from api.fast_predict import answer, parse_inputs
from api.schemas import (
    BODY_ERRORS,
    V1_ERRORS,
    EpochMetrics,
    EvaluateRequest,
    EvaluateResponse,
    JobCreate,
    JobOut,
    JobPage,
    JobStatusName,
    PredictRequest,
    PredictResponse,
    errors,
)
from api.services import evaluate, jobs, predict
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
              cursor: Annotated[str | None, Query(max_length=200)] = None,
              sweep_id: Annotated[str | None, Query(max_length=32,
                                                    description="Only this sweep's trials.")]
              = None) -> JobPage:
    found, next_cursor = read(lambda session: jobs.list_jobs(
        session, tenant=tenant, status=status, limit=limit, cursor=cursor, sweep_id=sweep_id))
    return JobPage(jobs=[jobs.job_out(job, settings) for job in found], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=errors(404),
            summary="A job: status, progress, metrics")
async def get_job(job_id: str, tenant: TenantDep, settings: SettingsDep,
                  finished: FinishedDep, reader: ReaderDep) -> Response:
    # What polling clients call most. A finished job's answer is served from memory; any
    # other job is one query, on the event loop on Postgres, else in a worker thread.
    known = jobs.finished_answer(finished, job_id=job_id, tenant=tenant)
    if known is not None:
        return json_response(known)
    if reader is not None:
        return json_response(await jobs.read_job_async(
            reader, job_id=job_id, tenant=tenant, settings=settings, finished=finished))
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


@router.post("/{job_id}/predict", response_model=PredictResponse,
             response_model_exclude_none=True,
             responses=errors(*BODY_ERRORS, 404, 409, 422, 500, descriptions={
                 409: "`conflict`: the job has not succeeded (or has no stored weights).",
                 422: "`validation_error` or `invalid_spec`: inputs not shaped "
                      "[N, *input_shape], or holding NaN or Inf; `loc` points at them. "
                      "`invalid_input` (`loc: [\"body\"]`): an unreadable .npy body.",
                 500: "`artifact_integrity`: the stored weights fail their integrity check "
                      "and are not loaded; `internal_error`: a bug."}),
             openapi_extra=json_body_doc(PredictRequest, binary=(NPY_TYPE,)),
             summary="Predictions of the trained model for inputs shaped [N, *input_shape]",
             description="The body is JSON `{\"inputs\": [...]}`, or the inputs array itself "
                         f"as a `.npy` file (`numpy.save`) with `content-type: {NPY_TYPE}`, "
                         "which skips parsing numbers from text. The answer is JSON either way.")
async def predict_job(job_id: str, request: Request, tenant: TenantDep,
                      cache: CacheDep) -> Response:
    # Requests for a model in memory are mostly answered before they get here, by
    # api.fast_predict; this route loads models, and answers the rest the same way.
    raw = await request.body()
    npy = media_type(request.headers.get("content-type", "")) == NPY_TYPE
    loaded = predict.cached(cache, job_id=job_id, tenant=tenant)
    if loaded is None:
        return await run_in_threadpool(_predict, raw, npy, job_id, tenant, cache,
                                       request.scope["state"])
    body = await answer(loaded, raw, npy=npy)
    predict.counted(request.scope["state"], loaded, None)
    return json_response(body)


def _predict(raw: bytes, npy: bool, job_id: str, tenant: str, cache: ModelCache,
             state: Any) -> Response:
    inputs = parse_inputs(raw, npy=npy)
    loaded = predict.cached_model(job_id=job_id, tenant=tenant, cache=cache)
    body = predict.predict(loaded, inputs)
    predict.counted(state, loaded, None)
    return json_response(body)


@router.post("/{job_id}/evaluate", response_model=EvaluateResponse,
             responses=errors(*BODY_ERRORS, 404, 409, 422, 500, descriptions={
                 409: "`conflict`: the job has not succeeded (or has no stored weights).",
                 422: "`validation_error`, `invalid_spec` or `invalid_input`: x not shaped "
                      "[N, *input_shape], y not fitting the outputs or the loss, NaN or Inf, "
                      "or an unknown dataset_id; `loc` points at them.",
                 500: "`artifact_integrity`: the stored weights fail their integrity check."}),
             openapi_extra=json_body_doc(EvaluateRequest, binary=(evaluate.NPZ_TYPE,)),
             summary="Loss and metrics of the trained model on new data (Keras' evaluate)",
             description="The body is JSON `{x, y}` or `{dataset_id}`, or an NPZ file "
                         "(`numpy.savez`) holding arrays `x` and `y` with `content-type: "
                         f"{evaluate.NPZ_TYPE}`. The loss and the job's metrics are computed "
                         "exactly as training computes its validation metrics; `samples` "
                         "is N.")
async def evaluate_job(job_id: str, request: Request, tenant: TenantDep,
                       cache: CacheDep) -> Response:
    raw = await request.body()
    return json_response(await run_in_threadpool(
        evaluate.evaluate_job, job_id=job_id, tenant=tenant, cache=cache, raw=raw,
        content_type=request.headers.get("content-type", "")))
