"""Liveness, readiness, and a browser's way in."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, RedirectResponse

from api.deps import SettingsDep
from api.schemas import Health
from api.services.health import readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health,
            responses={503: {"model": Health, "description": "A dependency is down."}},
            summary="Readiness: the database, the broker and MLflow answer")
def readyz(settings: SettingsDep) -> JSONResponse:
    checks = readiness(settings)
    ok = all(value == "ok" for value in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/", include_in_schema=False)
@router.get("/v1", include_in_schema=False)
def docs_redirect() -> RedirectResponse:
    """A browser opening the API's address (or /v1) lands on the interactive docs."""
    return RedirectResponse("/docs")
