"""FastAPI dependencies: settings, a database session per request, the caller's tenant."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from api.db import get_sessionmaker
from api.errors import Unauthorized
from api.services.predict import ModelCache
from api.settings import Settings, get_settings


def get_session() -> Iterator[Session]:
    with get_sessionmaker()() as session:
        yield session


def get_model_cache(request: Request) -> ModelCache:
    cache: ModelCache = request.app.state.model_cache
    return cache


def get_tenant(settings: Annotated[Settings, Depends(get_settings)],
               authorization: Annotated[str | None, Header()] = None) -> str:
    """The tenant owning the API key; "" when no keys are configured (auth off)."""
    keys = settings.api_key_map()
    if not keys:
        return ""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("this API needs `Authorization: Bearer <key>`",
                           headers={"WWW-Authenticate": "Bearer"})
    for key, tenant in keys.items():
        if hmac.compare_digest(key.encode(), token.encode()):
            return tenant
    raise Unauthorized("unknown API key", headers={"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
TenantDep = Annotated[str, Depends(get_tenant)]
CacheDep = Annotated[ModelCache, Depends(get_model_cache)]
