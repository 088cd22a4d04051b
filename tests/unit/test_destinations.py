"""The webhook destination guard: private, loopback, link-local... addresses are refused."""

from __future__ import annotations

import pytest

from api.destinations import RefusedDestination, destination
from api.settings import Settings
from worker.webhooks import _Claimed, _send


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://localhost:8000/hook", "http://10.1.2.3/", "http://172.16.0.1/",
    "http://192.168.1.1/", "http://169.254.169.254/latest", "http://100.64.0.1/",
    "http://0.0.0.0/", "http://[::1]/", "http://[fe80::1]/", "http://[fc00::1]/",
    "http://[::ffff:127.0.0.1]/", "http://224.0.0.1/", "ftp://93.184.216.34/",
    "http:///nohost", "https://user:pw@93.184.216.34/", "http://93.184.216.34:99999/",
])
def test_refused(url: str) -> None:
    with pytest.raises(RefusedDestination):
        destination(url, allow_private=False)


def test_a_public_address_is_pinned_with_the_original_host() -> None:
    target = destination("https://93.184.216.34:8443/hook?x=1", allow_private=False)
    assert target.url == "https://93.184.216.34:8443/hook?x=1"
    assert target.host_header == "93.184.216.34:8443"
    assert target.sni_hostname == "93.184.216.34"


def test_allowed_private_urls_are_used_as_given() -> None:
    target = destination("http://localhost:8000/hook", allow_private=True)
    assert target.url == "http://localhost:8000/hook" and target.host_header is None


def test_each_delivery_checks_the_destination_again() -> None:
    row = type("Row", (), {"url": "http://127.0.0.1:9/hook", "secret": "whsec_" + "A" * 44,
                           "payload": {}, "attempts": 0, "created_at": None})
    error, permanent = _send("msg_1", _Claimed(row), Settings(webhook_allow_private=False))
    assert permanent and error is not None and "refused destination" in error
