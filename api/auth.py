"""API keys and per-tenant request rates (no FastAPI here; api.deps wires it into requests).

Keys come from TAAS_API_KEYS (`tenant:key,...`) or are created with `taas keys create TENANT`
and stored as sha256 hashes only. Auth is on as soon as either kind exists.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from api.models import ApiKey
from api.settings import Settings

KEY_PREFIX = "taas_"
# Answers from the database, reused for TAAS_AUTH_CACHE_SECONDS: "do stored keys exist?" and
# "whose key is this?". Most requests then need no query.
_stored_cache: tuple[float, bool] = (float("-inf"), False)
_tenant_cache: dict[str, tuple[float, str]] = {}  # key hash -> (checked at, tenant)


def hash_key(key: str) -> str:
    # Keys are 256-bit random tokens, so a plain sha256 cannot be brute-forced.
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, *, tenant: str) -> str:
    """A new key for `tenant`; the key itself is returned once and never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(key_hash=hash_key(key), tenant=tenant, prefix=key[:12]))
    session.commit()
    return key


def _stored_keys_exist(session: Session, settings: Settings) -> bool:
    global _stored_cache
    checked_at, found = _stored_cache
    if time.monotonic() - checked_at > settings.auth_cache_seconds:
        found = bool(session.scalar(select(exists().where(ApiKey.revoked_at.is_(None)))))
        _stored_cache = (time.monotonic(), found)
    return found


def auth_enabled(session: Session, settings: Settings) -> bool:
    return bool(settings.api_key_map()) or _stored_keys_exist(session, settings)


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _env_tenant(settings: Settings, key: str) -> str | None:
    for known, tenant in settings.api_key_map().items():
        if hmac.compare_digest(known.encode(), key.encode()):
            return tenant
    return None


def tenant_for_key(session: Session, settings: Settings, key: str) -> str | None:
    tenant = _env_tenant(settings, key)
    if tenant is not None:
        return tenant
    key_hash = hash_key(key)
    stored = session.get(ApiKey, key_hash)
    if stored is None or stored.revoked_at is not None:
        return None
    _tenant_cache[key_hash] = (time.monotonic(), stored.tenant)
    return stored.tenant


def remembered_tenant(settings: Settings, authorization: str | None) -> str | None:
    """The caller's tenant when memory alone answers ("" when auth is off); None: ask the
    database. Answers the database gave are reused for TAAS_AUTH_CACHE_SECONDS."""
    now, ttl = time.monotonic(), settings.auth_cache_seconds
    checked_at, stored_keys = _stored_cache
    if now - checked_at > ttl:
        return None
    env_keys = bool(settings.api_key_map())
    if not env_keys and not stored_keys:
        return ""
    token = bearer_token(authorization)
    if token is None:
        return None  # the database path answers 401 with its message
    tenant = _env_tenant(settings, token) if env_keys else None
    if tenant is not None:
        return tenant
    found = _tenant_cache.get(hash_key(token))
    if found is not None and now - found[0] <= ttl:
        return found[1]
    return None


class RateLimiter:
    """A token bucket per tenant: `rate` requests a second, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, tenant: str) -> float:
        """0 when the request may go on, else the seconds to wait before retrying."""
        with self._lock:
            now = time.monotonic()
            tokens, last = self._buckets.get(tenant, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[tenant] = (tokens - 1, now)
                return 0.0
            self._buckets[tenant] = (tokens, now)
            return (1 - tokens) / self.rate


def is_serving_path(path: str) -> bool:
    """Predictions (by job, by model name, Open Inference Protocol infer): the data plane."""
    return path.endswith(("/predict", "/infer"))


class RateLimits:
    """Two budgets per tenant: the control plane (jobs, datasets, listings...) and serving.

    Serving has its own, much larger, budget so that an application calling a model is never
    throttled by a limit meant for job submissions and status polls (8 clients predicting got
    ~95 answers a second under the one shared default of 50/s; see the README)."""

    def __init__(self, *, control: RateLimiter, serving: RateLimiter) -> None:
        self.control, self.serving = control, serving

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(control=RateLimiter(settings.rate_limit, settings.rate_burst),
                   serving=RateLimiter(settings.predict_rate_limit, settings.predict_rate_burst))

    def for_path(self, path: str) -> RateLimiter:
        return self.serving if is_serving_path(path) else self.control
