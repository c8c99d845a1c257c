"""Where a webhook may be sent: checked at submission, and again on every connection.

A ``webhook_url`` makes the server send a request on the submitter's behalf, so it must not reach
what only the server can reach: loopback, private networks, link-local (cloud metadata), CGNAT,
multicast, unspecified and reserved addresses, nor those same addresses wrapped in IPv6 (IPv4-mapped,
NAT64, 6to4). An operator allows them with ``[webhook] allow_private`` or by listing host names in
``allow_hosts``. The URL may not carry credentials. Deliveries resolve the name through
:class:`GuardedResolver`, which refuses the same addresses, so the address connected to is the one
checked (a name rebound to 127.0.0.1 after the submission is refused at delivery); the Host header
and TLS name stay the URL's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Awaitable, Callable
from urllib.parse import SplitResult, urlsplit, urlunsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from stt_server.errors import BadRequest
from stt_server.settings import WebhookSettings

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) → addresses``: the system's by default; tests pass a table."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# IPv6 ranges that carry an IPv4 address in their last 32 bits: NAT64 (well-known and local-use),
# IPv4-compatible (deprecated, ::/96) and IPv4-translated (SIIT).
_WRAPPING = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96", "::ffff:0:0:0/96"))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class AddressRefused(OSError):
    """A webhook host resolved to an address deliveries may not reach."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped, NAT64, 6to4, IPv4-compatible or IPv4-translated
    IPv6 address; others (and ``::`` and ``::1`` themselves) as they are."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if int(ip) > 1 and any(ip in net for net in _WRAPPING):
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def address_refusal(address: str) -> str | None:
    """Why a webhook may not be sent to ``address``, or None for a public unicast address."""
    try:
        ip = _unwrap(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return "it is not an IP address"
    for kind, test in (("loopback", ip.is_loopback), ("unspecified", ip.is_unspecified),
                       ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                       ("shared (CGNAT)", ip in _CGNAT), ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if test:
            return f"it is {'an' if kind[0] in 'aeiou' else 'a'} {kind} address"
    return None if ip.is_global else "it is not a public address"


def url_refusal(url: str) -> str | None:
    """Why ``url`` is not an acceptable webhook URL in itself (before any resolution), or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "webhook_url is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "webhook_url must be an http(s) URL with a host"
    if parts.username is not None or parts.password is not None:
        return "webhook_url may not carry credentials; sign deliveries with the webhook secret instead"
    if port == 0:
        return "webhook_url has an invalid port"
    return None


def redact_url(url: str) -> str:
    """What may be shown or logged of a webhook URL: no credentials, no query, no fragment."""
    try:
        parts = urlsplit(url)
        netloc = (parts.hostname or "?") if ":" not in (parts.hostname or "") else f"[{parts.hostname}]"
        if parts.port:
            netloc += f":{parts.port}"
    except ValueError:
        return "(invalid URL)"
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, "", ""))


def _host_allowed(host: str, settings: WebhookSettings) -> bool:
    return settings.allow_private or host.lower().rstrip(".") in settings.allow_hosts


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def literal_refusal(url: str, settings: WebhookSettings) -> str | None:
    """Why ``url`` may not be delivered to without resolving anything: the URL itself, or a literal
    IP address in it (connections to those skip the resolver)."""
    refusal = url_refusal(url)
    host = (urlsplit(url).hostname or "") if refusal is None else ""
    if refusal is None and _is_literal(host) and not _host_allowed(host, settings):
        reason = address_refusal(host)
        refusal = f"webhook_url points at {host}: {reason}" if reason else None
    return refusal


RESOLVE_TIMEOUT_S = 5.0  # the check runs inside the upload's slot: a slow name must not hold it


async def check_webhook_url(url: str, settings: WebhookSettings, resolver: Resolver = system_resolver,
                            timeout_s: float = RESOLVE_TIMEOUT_S) -> None:
    """Raise a 400 unless a webhook may be sent to ``url``: its form, then every address its host has
    (a host that takes longer than ``timeout_s`` to resolve counts as one that does not)."""
    refusal = literal_refusal(url, settings)
    if refusal:
        raise BadRequest(refusal, param="webhook_url", code="invalid_webhook_url")
    parts = urlsplit(url)
    host = parts.hostname or ""
    if _host_allowed(host, settings) or _is_literal(host):
        return
    try:
        async with asyncio.timeout(timeout_s):
            addresses = await resolver(host, parts.port or (443 if parts.scheme == "https" else 80))
    except (OSError, TimeoutError):
        addresses = []
    if not addresses:
        raise BadRequest(f"webhook_url's host {host!r} does not resolve", param="webhook_url",
                         code="invalid_webhook_url")
    for address in addresses:
        reason = address_refusal(address)
        if reason:
            raise BadRequest(f"webhook_url's host {host!r} resolves to {address}: {reason}; "
                             "webhooks go to public addresses only", param="webhook_url",
                             code="invalid_webhook_url")


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver for deliveries: the addresses of a host, refused if any may not be reached."""

    def __init__(self, settings: WebhookSettings, resolver: Resolver = system_resolver) -> None:
        self.settings = settings
        self.resolver = resolver

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = await self.resolver(host, port)
        if not addresses:
            raise OSError(f"{host} does not resolve")
        if not _host_allowed(host, self.settings):
            for address in addresses:
                if address_refusal(address):
                    raise AddressRefused(f"{host} resolves to an address webhooks may not reach")
        return [ResolveResult(hostname=host, host=address, port=port,
                              family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST) for address in addresses]

    async def close(self) -> None:
        return None
