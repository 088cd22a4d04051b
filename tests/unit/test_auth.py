"""api.auth's pure parts: key hashing, the TAAS_API_KEYS map, key lookup, the token bucket."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from api.auth import RateLimiter, hash_key, tenant_for_key
from api.models import ApiKey
from api.settings import Settings


class FakeSession:
    """Just `get(ApiKey, key_hash)`, over a dict of stored keys."""

    def __init__(self, stored: dict[str, ApiKey] | None = None) -> None:
        self.stored = stored or {}

    def get(self, model: Any, key: str) -> ApiKey | None:
        assert model is ApiKey
        return self.stored.get(key)


def test_hash_key_is_sha256_hex_and_never_the_key() -> None:
    key = "taas_" + "x" * 43
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert key not in hash_key(key) and len(hash_key(key)) == 64


def test_api_key_map_parses_tenant_key_pairs() -> None:
    settings = Settings(api_keys=" alice:key-a , bob:key:with:colons,, ")
    assert settings.api_key_map() == {"key-a": "alice", "key:with:colons": "bob"}
    assert Settings(api_keys="").api_key_map() == {}
    for bad in ("alice", ":key", "alice:"):
        with pytest.raises(ValueError):
            Settings(api_keys=bad).api_key_map()


def test_tenant_for_key_from_settings_and_stored_hashes() -> None:
    settings = Settings(api_keys="alice:key-a,bob:key-b")
    stored = ApiKey(key_hash=hash_key("taas_carol"), tenant="carol", prefix="taas_carol")
    revoked = ApiKey(key_hash=hash_key("taas_dave"), tenant="dave", prefix="taas_dave",
                     revoked_at=datetime.now(UTC))
    session: Any = FakeSession({stored.key_hash: stored, revoked.key_hash: revoked})
    assert tenant_for_key(session, settings, "key-a") == "alice"
    assert tenant_for_key(session, settings, "key-b") == "bob"
    assert tenant_for_key(session, settings, "taas_carol") == "carol"
    assert tenant_for_key(session, settings, "taas_dave") is None
    for unknown in ("key-c", "", "key-a ", "KEY-A", "alice", hash_key("taas_carol")):
        assert tenant_for_key(session, settings, unknown) is None, unknown


def test_rate_limiter_allows_a_burst_then_refuses_with_the_wait() -> None:
    limiter = RateLimiter(rate=10.0, burst=5)
    assert [limiter.take("a") for _ in range(5)] == [0.0] * 5
    wait = limiter.take("a")
    assert 0 < wait <= 0.1 + 1e-6  # one token at 10/s
    assert limiter.take("b") == 0.0  # buckets are per tenant
    time.sleep(wait + 0.02)
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0


def test_rate_limiter_refills_no_more_than_the_burst() -> None:
    limiter = RateLimiter(rate=1000.0, burst=3)
    limiter.take("a")
    time.sleep(0.05)  # 50 tokens' worth of time, capped at 3
    assert [limiter.take("a") == 0.0 for _ in range(4)] == [True, True, True, False]


def test_remembered_tenant_answers_from_memory_only_within_the_cache_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from api import auth

    settings = Settings(api_keys="", auth_cache_seconds=5)
    monkeypatch.setattr(auth, "_tenant_cache", {})
    # Nothing known yet about stored keys: the database must answer.
    monkeypatch.setattr(auth, "_stored_cache", (float("-inf"), False))
    assert auth.remembered_tenant(settings, None) is None
    # No keys anywhere, checked just now: auth is off.
    monkeypatch.setattr(auth, "_stored_cache", (time.monotonic(), False))
    assert auth.remembered_tenant(settings, None) == ""
    # Stored keys exist: a key the database named recently is known, others are asked for.
    monkeypatch.setattr(auth, "_stored_cache", (time.monotonic(), True))
    stored = ApiKey(key_hash=hash_key("taas_carol"), tenant="carol", prefix="taas_carol")
    assert auth.remembered_tenant(settings, "Bearer taas_carol") is None
    assert tenant_for_key(FakeSession({stored.key_hash: stored}), settings,  # type: ignore[arg-type]
                          "taas_carol") == "carol"
    assert auth.remembered_tenant(settings, "Bearer taas_carol") == "carol"
    assert auth.remembered_tenant(settings, "Bearer taas_other") is None
    assert auth.remembered_tenant(settings, None) is None  # the database path answers 401
    # With no reuse at all, every request asks the database.
    assert auth.remembered_tenant(Settings(auth_cache_seconds=0), "Bearer taas_carol") is None


def test_remembered_tenant_knows_configured_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from api import auth

    monkeypatch.setattr(auth, "_stored_cache", (time.monotonic(), False))
    settings = Settings(api_keys="alice:key-a")
    assert auth.remembered_tenant(settings, "Bearer key-a") == "alice"
    assert auth.remembered_tenant(settings, "bearer key-a") == "alice"
    assert auth.remembered_tenant(settings, "Bearer key-b") is None


def test_predictions_have_their_own_rate_budget() -> None:
    from api.auth import RateLimits, is_serving_path
    from api.deps import within_rate
    from api.errors import TooManyRequests

    assert is_serving_path("/v1/jobs/abc/predict")
    assert is_serving_path("/v1/models/digits/aliases/champion/predict")
    assert is_serving_path("/v2/models/digits/versions/2/infer")
    assert not is_serving_path("/v1/jobs") and not is_serving_path("/v1/models/digits")
    limits = RateLimits(control=RateLimiter(rate=0.001, burst=2),
                        serving=RateLimiter(rate=0.001, burst=100))
    for _ in range(2):
        within_rate("a", "/v1/jobs", limits=limits)
    with pytest.raises(TooManyRequests, match="requests per second"):
        within_rate("a", "/v1/jobs/x", limits=limits)
    for _ in range(100):  # the control plane's budget is spent; serving's is not
        within_rate("a", "/v1/jobs/x/predict", limits=limits)
    with pytest.raises(TooManyRequests, match="predictions per second"):
        within_rate("a", "/v1/jobs/x/predict", limits=limits)


def test_default_prediction_budget_is_far_above_the_control_plane() -> None:
    settings = Settings()
    assert settings.predict_rate_limit >= 100 * settings.rate_limit
    assert settings.predict_rate_burst >= 100 * settings.rate_burst
