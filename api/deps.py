"""FastAPI dependencies: settings, a database session per request, the caller's tenant."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from api.auth import RateLimiter, auth_enabled, tenant_for_key
from api.db import get_sessionmaker
from api.errors import TooManyRequests, Unauthorized
from api.services.predict import ModelCache
from api.settings import Settings, get_settings


def get_session() -> Iterator[Session]:
    with get_sessionmaker()() as session:
        yield session


def get_model_cache(request: Request) -> ModelCache:
    cache: ModelCache = request.app.state.model_cache
    return cache


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


def get_tenant(request: Request, settings: SettingsDep, session: SessionDep,
               authorization: Annotated[str | None, Header()] = None) -> str:
    """The tenant owning the API key ("" when no keys exist: auth off), within its rate."""
    tenant = ""
    if auth_enabled(session, settings):
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("this API needs `Authorization: Bearer <key>`",
                               headers={"WWW-Authenticate": "Bearer"})
        found = tenant_for_key(session, settings, token.strip())
        if found is None:
            raise Unauthorized("unknown API key", headers={"WWW-Authenticate": "Bearer"})
        tenant = found
    limiter: RateLimiter = request.app.state.rate_limiter
    wait = limiter.take(tenant)
    if wait:
        raise TooManyRequests(f"more than {settings.rate_limit:g} requests per second; retry "
                              f"in {wait:.2f}s", headers={"Retry-After": str(math.ceil(wait))})
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]
CacheDep = Annotated[ModelCache, Depends(get_model_cache)]
