"""The FastAPI app: `uvicorn api.main:app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import torch
from fastapi import FastAPI

from api.aio_db import AsyncReader
from api.auth import RateLimiter
from api.cache import LRUCache
from api.deps import authenticate, remembered
from api.errors import install_error_handlers
from api.fast_predict import PredictFastPath
from api.middleware import RequestGuard
from api.openapi import install_openapi
from api.routes import datasets, health, jobs, specs, sweeps
from api.services.jobs import FinishedJob
from api.services.predict import ModelCache
from api.settings import get_settings

DESCRIPTION = """Send a neural-network spec and a training spec; the service trains the PyTorch
model on a worker, tracks it in MLflow and serves predictions. Errors always look like
`{"error": {"type", "message", "loc"?}}`."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The event loop's Postgres reader lives as long as the server (none on SQLite)."""
    reader = AsyncReader.create(get_settings().resolved_database_url)
    app.state.reader = reader
    try:
        yield
    finally:
        if reader is not None:
            await reader.close()


def create_app() -> FastAPI:
    settings = get_settings()
    # Each request's forward pass is small; one thread per request avoids oversubscribing
    # the cores when several requests run at once.
    torch.set_num_threads(1)
    app = FastAPI(title="taas", version="1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.model_cache = ModelCache(settings.predict_cache_size)
    app.state.finished_jobs = LRUCache[FinishedJob](settings.finished_cache_size)
    limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
    # Added first, so it runs inside the guard (after authentication and the body checks).
    app.add_middleware(PredictFastPath, cache=app.state.model_cache)
    app.add_middleware(RequestGuard, max_bytes=settings.max_request_bytes,
                       max_upload_bytes=settings.max_dataset_bytes,
                       authenticate=partial(authenticate, settings=settings, limiter=limiter),
                       remembered=partial(remembered, settings=settings, limiter=limiter))
    install_error_handlers(app)
    for router in (jobs.router, sweeps.router, datasets.router, specs.router, health.router):
        app.include_router(router)
    install_openapi(app)
    logging.getLogger("taas").setLevel(logging.INFO)
    return app


app = create_app()
