"""The worker's HTTP edge: one pooled transport per process, one POST per attempt.

httpx's transport API over aiohttp's connection pool (`httpx_aiohttp`): on a 2-core
machine httpx's own async pool managed ~150 POSTs/s at 32 concurrent requests, this one
~1,650/s. Each attempt sends a prebuilt `httpx.Request` straight to the transport: the
`httpx.AsyncClient` machinery around it (auth flow, redirects, cookies, event hooks,
header merging) costs more CPU than the transport itself, and a worker that follows no
redirects and keeps no cookies needs none of it.

The SSRF guard (SPEC 5) runs where the connection is made, so that a name which
resolved to a public address when the configuration was saved and to a private one
now (DNS rebinding) is still refused: `GuardedResolver` checks every address a name
resolves to, and `send` checks hosts that are addresses already, which aiohttp never
resolves. Every failure leaves `send` as one of `workers.errors`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import lru_cache

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from httpx_aiohttp import AiohttpTransport

from core.targets import blocked_address, blocked_hostname, literal_address
from workers.errors import (
    ConnectFailed,
    DeliveryError,
    RequestTimeout,
    TargetBlocked,
    TransportFailed,
)

MAX_RESPONSE_BODY_BYTES = 16 * 1024

# Sent with every request, as httpx's client did by default. Only the first 16 KiB of a
# reply are kept: inflating a compressed body is wasted work, hence `identity`.
DEFAULT_HEADERS = {"accept": "*/*", "accept-encoding": "identity", "connection": "keep-alive"}


def _with_defaults(headers: Mapping[str, str]) -> dict[str, str]:
    """`headers` and those of `DEFAULT_HEADERS` they do not name in any case: a
    configuration's `Accept` replaces ours instead of going out beside it."""
    given = {name.lower() for name in headers}
    defaults = {name: value for name, value in DEFAULT_HEADERS.items() if name not in given}
    return {**defaults, **headers}


# Parsed URLs kept: a worker sends to the same few endpoints over and over.
_PARSED_URLS = 1024

# What a request may raise besides our own errors; anything else is a bug, not a
# failed delivery, and must not be retried as one.
_TRANSPORT_ERRORS = (httpx.HTTPError, httpx.InvalidURL, aiohttp.ClientError, OSError)


@dataclass(frozen=True)
class Reply:
    """What a receiver answered: any status code, the first 16 KiB of the body."""

    status_code: int
    body: str
    retry_after: str | None
    duration_ms: int


class BlockedResolution(OSError):
    """A name resolved to a blocked address. An OSError so that aiohttp reports it as a
    resolution failure; `send` finds it among the causes and raises `TargetBlocked`."""


class GuardedResolver(AbstractResolver):
    """Resolves through `inner` and refuses the whole answer if any address is blocked:
    aiohttp may try each of them, so each must be allowed."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if blocked_hostname(host):
            raise BlockedResolution(f"{host} is a local name")
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if _blocked_result(result["host"]):
                raise BlockedResolution(f"{host} resolves to blocked {result['host']}")
        return results

    async def close(self) -> None:
        await self._inner.close()


def create_transport(
    *, allow_private_targets: bool, max_connections: int = 100
) -> httpx.AsyncBaseTransport:
    """The process's transport: keep-alive pool, no redirects, no cookies, the guard on
    unless `allow_private_targets`. Close it with `aclose()`.

    The aiohttp session is made on the first request, inside the event loop that sends:
    aiohttp binds a session to the loop that creates it.
    """

    def session() -> aiohttp.ClientSession:
        resolver = None if allow_private_targets else GuardedResolver(aiohttp.ThreadedResolver())
        connector = aiohttp.TCPConnector(limit=max_connections, resolver=resolver)
        # One session serves every receiver: sharing cookies would leak them between them.
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    return AiohttpTransport(client=session)


async def send(
    transport: httpx.AsyncBaseTransport,
    url: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
    allow_private_targets: bool,
) -> Reply:
    """POST `body` to `url` with `headers` (and `DEFAULT_HEADERS`) and return the reply,
    whatever its status code, within `timeout_s` for the whole exchange (a body that
    never ends or trickles in does not hold it longer). Redirects are not followed and
    no cookies are sent. Reads at most `MAX_RESPONSE_BODY_BYTES` of the body.

    Raises `TargetBlocked`, `RequestTimeout`, `ConnectFailed` or `TransportFailed`.
    `allow_private_targets` must be what `transport` was created with: this call checks
    hosts that are addresses, the transport's resolver checks names.
    """
    target = _parse(url)
    if not allow_private_targets:
        _check_literal_host(target.host)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            request = httpx.Request(
                "POST",
                target,
                headers=_with_defaults(headers),
                content=body,
                extensions={"timeout": httpx.Timeout(timeout_s).as_dict()},
            )
            status_code, retry_after, content = await _post(transport, request)
    except _TRANSPORT_ERRORS as exc:
        raise _translate(exc) from exc
    return Reply(
        status_code=status_code,
        body=content.decode("utf-8", errors="replace"),
        retry_after=retry_after,
        duration_ms=round((time.perf_counter() - started) * 1000),
    )


async def _post(
    transport: httpx.AsyncBaseTransport, request: httpx.Request
) -> tuple[int, str | None, bytes]:
    response = await transport.handle_async_request(request)
    try:
        content = bytearray()
        async for chunk in _chunks(response):
            content += chunk
            if len(content) >= MAX_RESPONSE_BODY_BYTES:
                break
        return (
            response.status_code,
            response.headers.get("retry-after"),
            bytes(content[:MAX_RESPONSE_BODY_BYTES]),
        )
    finally:
        # Closing a response not read to its end makes aiohttp drop the connection
        # instead of reading the rest into the pool.
        await response.aclose()


def _chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as it arrives: the transport's stream itself, without httpx's per-chunk
    decoding, unless the receiver compressed it although asked not to."""
    stream = response.stream
    if "content-encoding" in response.headers or not isinstance(stream, httpx.AsyncByteStream):
        return response.aiter_bytes()
    return aiter(stream)


@lru_cache(maxsize=_PARSED_URLS)
def _parse(url: str) -> httpx.URL:
    try:
        return httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise TransportFailed(f"invalid URL: {exc}") from exc


def _check_literal_host(host: str) -> None:
    if blocked_hostname(host):
        raise TargetBlocked(f"{host} is a local name")
    address = literal_address(host)
    if address is not None and blocked_address(address):
        raise TargetBlocked(f"{host} is a blocked address")


def _blocked_result(host: str) -> bool:
    try:
        return blocked_address(ipaddress.ip_address(host))
    except ValueError:
        return True  # not an address we can judge: refuse rather than guess


def _translate(exc: BaseException) -> DeliveryError:
    """The most specific of our errors for `exc`, judged by its root cause."""
    causes = _causes(exc)
    if any(isinstance(cause, BlockedResolution) for cause in causes):
        return TargetBlocked(str(exc))
    if any(isinstance(cause, TimeoutError) for cause in causes):
        return RequestTimeout(str(exc) or "request timed out")
    # httpx_aiohttp maps every aiohttp connection error, a refused connection
    # included, to httpx.ConnectTimeout, so aiohttp's own exception decides.
    aiohttp_error = next((c for c in causes if isinstance(c, aiohttp.ClientError)), None)
    if aiohttp_error is not None:
        failure = isinstance(aiohttp_error, aiohttp.ClientConnectorError)
        return (ConnectFailed if failure else TransportFailed)(str(aiohttp_error))
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeout(str(exc))
    if isinstance(exc, httpx.ConnectError | ConnectionError | socket.gaierror):
        return ConnectFailed(str(exc))
    return TransportFailed(str(exc))


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what caused it, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain
