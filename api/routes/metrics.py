"""GET /metrics: Prometheus' text format (what is measured: api.metrics)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (text format)",
            include_in_schema=False)  # for Prometheus, not for API clients
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry  # the jobs' part reads the database
    return Response(await run_in_threadpool(generate_latest, registry),
                    media_type=CONTENT_TYPE_LATEST)


