"""Where the service may send requests on a user's behalf (webhooks): server-side request
forgery guard.

A URL's host is resolved and every address it resolves to must be public: private, loopback,
link-local, shared, reserved, multicast and unspecified addresses are refused (IPv4-mapped IPv6
addresses are judged as the IPv4 address they carry). The request is then made to the address
that was checked (with the original Host header and TLS server name), so a DNS answer that
changes between the check and the connection cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit


class RefusedDestination(ValueError):
    """The URL is malformed, does not resolve, or resolves to a non-public address."""


@dataclass(frozen=True)
class Destination:
    """Where to connect: `url` (host replaced by the checked address when pinned), the
    `host` header to send and the TLS server name (None: httpx derives both from `url`)."""

    url: str
    host_header: str | None = None
    sni_hostname: str | None = None


def check_url(url: str) -> tuple[str, int, str]:
    """(scheme, port, host) of an http(s) URL; RefusedDestination otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise RefusedDestination(f"not a valid URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise RefusedDestination("the URL must start with http:// or https://")
    if not parts.hostname:
        raise RefusedDestination("the URL has no host")
    if parts.username or parts.password:
        raise RefusedDestination("the URL must not carry credentials")
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, port or default, parts.hostname


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve_public(host: str, port: int) -> str:
    """The first address of `host`, if every address it resolves to is public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise RefusedDestination(f"the host {host!r} does not resolve: {error}") from None
    addresses = [str(info[4][0]) for info in infos]
    refused = sorted({a for a in addresses if not _is_public(a)})
    if refused:
        raise RefusedDestination(
            f"the host {host!r} resolves to {', '.join(refused)}, a private, loopback, "
            "link-local or otherwise non-public address; the service does not send requests "
            "there (TAAS_WEBHOOK_ALLOW_PRIVATE=1 allows it)")
    return addresses[0]


def destination(url: str, *, allow_private: bool) -> Destination:
    """Check `url` and say where to connect; RefusedDestination if it is not allowed."""
    scheme, port, host = check_url(url)
    if allow_private:
        return Destination(url)
    address = resolve_public(host, port)
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    return Destination(urlunsplit(parts._replace(netloc=netloc)),
                       host_header=parts.netloc.rsplit("@", 1)[-1],
                       sni_hostname=host if scheme == "https" else None)
