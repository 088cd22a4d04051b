"""The FastAPI app: `uvicorn api.main:app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import torch
from fastapi import FastAPI

from api.aio_db import AsyncReader
from api.auth import RateLimits
from api.cache import LRUCache
from api.deps import authenticate, remembered, within_rate
from api.directory import ModelDirectory
from api.errors import install_error_handlers
from api.fast_predict import PredictFastPath
from api.metrics import HttpMetrics, Metrics
from api.middleware import RequestGuard
from api.openapi import install_openapi
from api.routes import (
    datasets,
    events,
    health,
    jobs,
    metrics,
    models,
    specs,
    sweeps,
    v2,
    webhooks,
)
from api.services.jobs import FinishedJob
from api.services.predict import ModelCache
from api.settings import get_settings

DESCRIPTION = """Send a neural-network spec and a training spec; the service trains the PyTorch
model on a worker, tracks it in MLflow and serves predictions. Errors always look like
`{"error": {"type", "message", "loc"?}}`."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The event loop's Postgres reader lives as long as the server (none on SQLite), and so
    does the model directory's polling thread."""
    reader = AsyncReader.create(get_settings().resolved_database_url)
    app.state.reader = reader
    app.state.model_directory.start()
    try:
        yield
    finally:
        app.state.model_directory.stop()
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
    app.state.model_directory = ModelDirectory(settings.model_poll_seconds)
    limits = RateLimits.from_settings(settings)
    # Added first, so it runs inside the guard (after authentication and the body checks).
    app.add_middleware(PredictFastPath, cache=app.state.model_cache,
                       directory=app.state.model_directory)
    app.add_middleware(RequestGuard, max_bytes=settings.max_request_bytes,
                       max_upload_bytes=settings.max_dataset_bytes,
                       authenticate=partial(authenticate, settings=settings),
                       remembered=partial(remembered, settings=settings),
                       within_rate=partial(within_rate, limits=limits))
    # Outermost: the guard's refusals are counted too.
    app.state.metrics = Metrics(app.state.model_cache)
    routers = (jobs.router, events.router, sweeps.router, models.router, datasets.router,
               specs.router, webhooks.router, health.router, v2.router, metrics.router)
    app.add_middleware(HttpMetrics, metrics=app.state.metrics,
                       routes=[route for router in routers for route in router.routes])
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    install_openapi(app)
    logging.getLogger("taas").setLevel(logging.INFO)
    return app


app = create_app()
