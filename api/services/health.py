"""Readiness checks: each dependency answers within a short timeout, or says why not."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import text

from api.db import get_engine
from api.queue import get_celery
from api.settings import Settings

TIMEOUT = 2.0


def _database() -> None:
    with get_engine().connect() as connection:
        connection.execute(text("SELECT 1"))


def _broker() -> None:
    with get_celery().connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=TIMEOUT)


def _mlflow(settings: Settings) -> None:
    uri = settings.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=TIMEOUT) as response:
            response.read()


def readiness(settings: Settings) -> dict[str, str]:
    checks = {"database": _database, "broker": _broker, "mlflow": lambda: _mlflow(settings)}
    with ThreadPoolExecutor(len(checks)) as pool:
        futures = {name: pool.submit(check) for name, check in checks.items()}
        results = {}
        for name, future in futures.items():
            try:
                future.result(timeout=TIMEOUT * 2)
                results[name] = "ok"
            except Exception as error:  # any failure means "not ready"; the reason is shown
                results[name] = f"unavailable: {type(error).__name__}: {error}"[:300]
    return results
