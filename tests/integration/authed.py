"""A module's own stack with auth on for two tenants (Postgres + Redis, or the embedded
default), for the live events, SDK and CLI tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import _fresh_postgres_database, _fresh_redis_database
from tests.integration.stack import Stack, base_env, free_port, migrate

KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-0123456789"}


def authed_stack(kind: str, request: pytest.FixtureRequest, workdir: Path,
                 mlflow_url: str, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    env = base_env(workdir, mlflow_url) | {
        "TAAS_API_KEYS": ",".join(f"{tenant}:{key}" for tenant, key in KEYS.items()),
        "TAAS_EVENTS_POLL_INTERVAL": "0.05"} | (extra_env or {})
    if kind == "postgres-redis":
        env |= {"TAAS_DATABASE_URL": _fresh_postgres_database(request),
                "TAAS_BROKER_URL": _fresh_redis_database()}
    migrate(env)
    built = Stack(kind=kind, api_url=f"http://127.0.0.1:{free_port()}", env=env,
                  mlflow_url=mlflow_url, workdir=workdir)
    try:
        built.start_worker()
        built.start_api()
        yield built
    finally:
        built.stop()


def headers(tenant: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}
