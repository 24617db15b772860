"""Which network addresses a webhook may reach (the SSRF rule of SPEC 5).

`blocked_address(ip)` is the one rule; registration checks every spelling of a host
and what it resolves to now, and the worker checks the address it actually connects to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT_S = 2.0
BLOCKED_TARGET_MESSAGE = "targets a private or reserved address"


# IPv6 prefixes whose last 32 bits are an IPv4 address a gateway may forward to:
# NAT64's well-known prefix, and the deprecated IPv4-compatible form.
_EMBEDDING_IPV4 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [address for address in (ip.ipv4_mapped, ip.sixtofour) if address is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in network for network in _EMBEDDING_IPV4):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def blocked_address(ip: IPAddress) -> bool:
    """True for loopback, private, link-local, unique-local, multicast, unspecified,
    reserved and any other non-global address, including an IPv4 address embedded in
    IPv6 (mapped, 6to4, Teredo, NAT64, IPv4-compatible)."""
    if isinstance(ip, ipaddress.IPv6Address) and any(
        blocked_address(embedded) for embedded in _embedded_ipv4(ip)
    ):
        return True
    return ip.is_multicast or not ip.is_global


def literal_address(host: str) -> IPAddress | None:
    """The address a host names literally, in any spelling a resolver would accept
    (`127.0.0.1`, `2130706433`, `0x7f000001`, `0177.1`, `[::1]`, `::ffff:127.0.0.1`)."""
    host = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        # inet_aton accepts the legacy decimal, octal, hex and short forms.
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def blocked_hostname(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost")


async def host_is_blocked(host: str) -> bool:
    """True if `host` is, or now resolves to, a blocked address. A name that does not
    resolve is not blocked here: the worker checks again when it connects."""
    if blocked_hostname(host):
        return True
    literal = literal_address(host)
    if literal is not None:
        return blocked_address(literal)
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM),
            RESOLVE_TIMEOUT_S,
        )
    except (OSError, TimeoutError, UnicodeError):
        return False
    return any(blocked_address(ipaddress.ip_address(info[4][0])) for info in infos)


async def url_is_blocked(url: str, *, allow_private_targets: bool) -> bool:
    """Registration's rule for a configuration's URL: its host must not be, nor resolve
    to, a blocked address, unless private targets are allowed (development, tests)."""
    if allow_private_targets:
        return False
    return await host_is_blocked(urlsplit(url).hostname or "")
