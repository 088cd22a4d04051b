"""/v1/sweeps: thin routes; the work is in api.services.sweeps (and the worker's controller)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from api.db import read
from api.deps import SessionDep, SettingsDep, TenantDep
from api.schemas import BODY_ERRORS, V1_ERRORS, errors
from api.services import sweeps
from api.sweep_schemas import (
    Promoted,
    PromoteRequest,
    SweepCreate,
    SweepOut,
    SweepPage,
    TrialOut,
)

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], responses=errors(*V1_ERRORS))


@router.post("", status_code=202, response_model=SweepOut,
             responses=errors(400, *BODY_ERRORS, 422, 503, descriptions={
                 422: "`validation_error`, `invalid_spec` or `invalid_input`: a parameter path "
                      "not in `base`, a bad range, a `base` that cannot run, an objective the "
                      "base does not report, `max_parallel` above the tenant's job limit; "
                      "nothing was queued; `loc` points into the body.",
                 503: "`database_unavailable`, or `unavailable`: the job queue (broker) is "
                      "unreachable; nothing was stored."}),
             summary="Start a hyperparameter sweep: trials are jobs, searched by Optuna")
def create_sweep(body: SweepCreate, session: SessionDep, tenant: TenantDep,
                 settings: SettingsDep) -> SweepOut:
    sweep = sweeps.create_sweep(session, body=body, tenant=tenant, settings=settings)
    return sweeps.sweep_out(session, sweep, settings)


@router.get("", response_model=SweepPage, summary="List sweeps, newest first")
def list_sweeps(tenant: TenantDep, settings: SettingsDep,
                limit: Annotated[int, Query(ge=1, le=500)] = 50,
                cursor: Annotated[str | None, Query(max_length=200)] = None) -> SweepPage:
    def page(session: Session) -> SweepPage:
        found, next_cursor = sweeps.list_sweeps(session, tenant=tenant, limit=limit,
                                                cursor=cursor)
        return SweepPage(sweeps=[sweeps.sweep_out(session, s, settings) for s in found],
                         next_cursor=next_cursor)
    return read(page)


@router.get("/{sweep_id}", response_model=SweepOut, responses=errors(404),
            summary="A sweep: status, trial counts, the best trial so far")
def get_sweep(sweep_id: str, tenant: TenantDep, settings: SettingsDep) -> SweepOut:
    return read(lambda session: sweeps.sweep_out(
        session, sweeps.get_sweep(session, sweep_id=sweep_id, tenant=tenant), settings))


@router.get("/{sweep_id}/trials", response_model=list[TrialOut], responses=errors(404),
            summary="The sweep's trials by number: job, parameters, status, objective")
def list_trials(sweep_id: str, tenant: TenantDep) -> list[TrialOut]:
    return read(lambda session: sweeps.list_trials(
        session, sweep=sweeps.get_sweep(session, sweep_id=sweep_id, tenant=tenant)))


@router.post("/{sweep_id}/cancel", response_model=SweepOut,
             responses=errors(*BODY_ERRORS, 404, 409, descriptions={
                 409: "`conflict`: the sweep already finished."}),
             summary="Cancel: no new trials; queued and running trials cancelled")
def cancel_sweep(sweep_id: str, session: SessionDep, tenant: TenantDep,
                 settings: SettingsDep) -> SweepOut:
    sweeps.cancel_sweep(sweep_id=sweep_id, tenant=tenant)
    return sweeps.sweep_out(session, sweeps.get_sweep(session, sweep_id=sweep_id,
                                                      tenant=tenant), settings)


@router.post("/{sweep_id}/promote", response_model=Promoted,
             responses=errors(*BODY_ERRORS, 404, 409, 422, descriptions={
                 409: "`conflict`: no trial has succeeded yet.",
                 422: "`validation_error`: an alias MLflow reserves (a number, `latest`, "
                      "`v<n>`)."}),
             summary="Point a model alias at the sweep's best trial's version")
def promote_sweep(sweep_id: str, body: PromoteRequest, session: SessionDep,
                  tenant: TenantDep) -> Promoted:
    return sweeps.promote_best(session, sweep_id=sweep_id, tenant=tenant, alias=body.alias)
