"""FastAPI dependencies: settings, a database session per request, the caller's tenant."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api.aio_db import AsyncReader
from api.auth import (
    RateLimits,
    auth_enabled,
    bearer_token,
    remembered_tenant,
    tenant_for_key,
)
from api.cache import LRUCache
from api.db import get_sessionmaker
from api.directory import ModelDirectory
from api.errors import TooManyRequests, Unauthorized
from api.services.jobs import FinishedJob
from api.services.predict import ModelCache
from api.settings import Settings, get_settings


def get_session() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        # Closing rolls back on the connection; if the database went away mid-request that
        # fails too, after the response (e.g. the 503) was sent. Drop the dead connection
        # instead of breaking the response.
        try:
            session.close()
        except SQLAlchemyError:
            session.invalidate()


# The dependencies below only read memory: async, so FastAPI does not hop to a thread for them.
async def get_settings_dep() -> Settings:
    return get_settings()


async def get_finished_jobs(request: Request) -> LRUCache[FinishedJob]:
    cache: LRUCache[FinishedJob] = request.app.state.finished_jobs
    return cache


async def get_reader(request: Request) -> AsyncReader | None:
    """The event loop's Postgres reader; None on SQLite (or when the app's lifespan did not
    run, as under a bare ASGI transport): then reads go through api.db in a thread."""
    reader: AsyncReader | None = getattr(request.app.state, "reader", None)
    return reader


async def get_model_directory(request: Request) -> ModelDirectory:
    directory: ModelDirectory = request.app.state.model_directory
    return directory


async def get_model_cache(request: Request) -> ModelCache:
    cache: ModelCache = request.app.state.model_cache
    return cache


def authenticate(authorization: str | None, *, settings: Settings) -> str:
    """The tenant owning the API key ("" when no keys exist: auth off).

    Called by the request guard (api.middleware) before any body is read, in a thread, when
    `remembered_tenant` could not answer from memory."""
    tenant = ""
    with get_sessionmaker()() as session:
        if auth_enabled(session, settings):
            token = bearer_token(authorization)
            if token is None:
                raise Unauthorized("this API needs `Authorization: Bearer <key>`",
                                   headers={"WWW-Authenticate": "Bearer"})
            found = tenant_for_key(session, settings, token)
            if found is None:
                raise Unauthorized("unknown API key", headers={"WWW-Authenticate": "Bearer"})
            tenant = found
    return tenant


def remembered(authorization: str | None, *, settings: Settings) -> str | None:
    """`authenticate` from memory only, on the event loop; None when the database must say."""
    return remembered_tenant(settings, authorization)


def within_rate(tenant: str, path: str, *, limits: RateLimits) -> None:
    """429 when the tenant is over its budget for this kind of request (serving or control)."""
    limiter = limits.for_path(path)
    wait = limiter.take(tenant)
    if wait:
        kind = "predictions" if limiter is limits.serving else "requests"
        raise TooManyRequests(f"more than {limiter.rate:g} {kind} per second; retry in "
                              f"{wait:.2f}s", headers={"Retry-After": str(math.ceil(wait))})


_bearer = HTTPBearer(auto_error=False, description="An API key, when the service has keys.")


async def get_tenant(request: Request,
                     _credentials: Annotated[HTTPAuthorizationCredentials | None,
                                             Depends(_bearer)] = None) -> str:
    """The tenant the request guard authenticated (the bearer scheme is declared here so the
    OpenAPI docs offer it)."""
    tenant: str = request.state.tenant
    return tenant


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
TenantDep = Annotated[str, Depends(get_tenant)]
CacheDep = Annotated[ModelCache, Depends(get_model_cache)]
DirectoryDep = Annotated[ModelDirectory, Depends(get_model_directory)]
FinishedDep = Annotated[LRUCache[FinishedJob], Depends(get_finished_jobs)]
ReaderDep = Annotated[AsyncReader | None, Depends(get_reader)]
