"""The HTTP edge against real receivers on 127.0.0.1: replies, limits, errors, the guard."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import httpx
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from tests.receivers import Receiver
from tests.servers import free_port
from workers.errors import ConnectFailed, RequestTimeout, TargetBlocked, TransportFailed
from workers.transport import (
    MAX_RESPONSE_BODY_BYTES,
    BlockedResolution,
    GuardedResolver,
    Reply,
    create_transport,
    send,
)

BODY = b'{"event_type": "ping", "content": {}}'
HEADERS = {"content-type": "application/json", "webhook-id": "msg_1"}
TIMEOUT_S = 5.0
SHORT_TIMEOUT_S = 0.5
MARGIN_S = 1.0
REBIND_HOST = "rebind.example"


# -- receivers -------------------------------------------------------------------------

OK = "/ok"
REDIRECT = "/status/redirect"
UNAVAILABLE = "/status/unavailable"
UTF8 = "/ok/utf8"
ENDLESS = "/endless"
TRICKLE = "/trickle"
SLOW = f"/slow/{SHORT_TIMEOUT_S * 10}"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A real HTTP receiver on 127.0.0.1 (`tests.receivers`), with a cookie on every
    `OK`, a redirect, a 503 with Retry-After, and a body of two-byte characters."""
    receiver = Receiver(
        statuses={REDIRECT: 302, UNAVAILABLE: 503},
        headers={
            OK: {"set-cookie": "session=secret; Path=/"},
            REDIRECT: {"location": OK},
            UNAVAILABLE: {"retry-after": "120"},
        },
        bodies={OK: b"hello", UNAVAILABLE: b"later", UTF8: "é".encode() * MAX_RESPONSE_BODY_BYTES},
    )
    with receiver.running() as running:
        yield running


@pytest.fixture
def fresh(receiver: Receiver) -> Receiver:
    receiver.clear()
    return receiver


def _paths(receiver: Receiver) -> list[str]:
    return [item.path for item in receiver.received]


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[RawHandler], Awaitable[int]]]:
    """Starts TCP servers that misbehave below HTTP; returns their port."""
    servers: list[asyncio.Server] = []

    async def start(handler: RawHandler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


# -- clients ---------------------------------------------------------------------------

NewClient = Callable[..., httpx.AsyncBaseTransport]


@pytest.fixture
async def new_client() -> AsyncIterator[NewClient]:
    """Makes clients like the worker's and closes them all afterwards."""
    clients: list[httpx.AsyncBaseTransport] = []

    def make(*, allow_private_targets: bool = True) -> httpx.AsyncBaseTransport:
        client = create_transport(allow_private_targets=allow_private_targets)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def _send(
    client: httpx.AsyncBaseTransport,
    url: str,
    *,
    timeout_s: float = TIMEOUT_S,
    allow_private_targets: bool = True,
) -> Reply:
    return await send(
        client,
        url,
        body=BODY,
        headers=HEADERS,
        timeout_s=timeout_s,
        allow_private_targets=allow_private_targets,
    )


# -- replies ---------------------------------------------------------------------------


async def test_a_2xx_reply(fresh: Receiver, new_client: NewClient) -> None:
    reply = await _send(new_client(), fresh.url(OK))

    assert reply.status_code == 200
    assert reply.body == "hello"
    assert reply.retry_after is None
    assert 0 <= reply.duration_ms < TIMEOUT_S * 1000
    [item] = fresh.received
    assert (item.path, item.body) == (OK, BODY)
    assert item.headers["webhook-id"] == "msg_1"
    assert item.headers["content-type"] == "application/json"


async def test_the_request_carries_the_default_headers(
    fresh: Receiver, new_client: NewClient
) -> None:
    # The headers httpx's client added by default are still sent.
    await _send(new_client(), fresh.url(OK))

    [item] = fresh.received
    assert item.headers["accept"] == "*/*"
    assert item.headers["accept-encoding"] == "identity"
    assert item.headers["connection"] == "keep-alive"
    assert item.headers["content-length"] == str(len(BODY))
    assert item.headers["host"] == fresh.url(OK).split("/")[2]


async def test_the_pool_keeps_working_across_requests(
    fresh: Receiver, new_client: NewClient
) -> None:
    client = new_client()
    replies = await asyncio.gather(*(_send(client, fresh.url(OK)) for _ in range(20)))

    assert {reply.status_code for reply in replies} == {200}
    assert len(fresh.received) == 20


async def test_cookies_are_not_kept_between_requests(
    fresh: Receiver, new_client: NewClient
) -> None:
    client = new_client()
    await _send(client, fresh.url(OK))
    await _send(client, fresh.url(OK))

    assert all("cookie" not in item.headers for item in fresh.received)


async def test_a_redirect_is_returned_not_followed(fresh: Receiver, new_client: NewClient) -> None:
    reply = await _send(new_client(), fresh.url(REDIRECT))

    assert reply.status_code == 302
    assert _paths(fresh) == [REDIRECT]


async def test_a_503_carries_retry_after(fresh: Receiver, new_client: NewClient) -> None:
    reply = await _send(new_client(), fresh.url(UNAVAILABLE))

    assert (reply.status_code, reply.body, reply.retry_after) == (503, "later", "120")


async def test_the_body_is_cut_at_16_kib_even_mid_character(
    fresh: Receiver, new_client: NewClient
) -> None:
    reply = await _send(new_client(), fresh.url(UTF8))

    # 16 KiB of two-byte characters: 8192 of them, the cut falls between two of them.
    assert reply.body == "é" * (MAX_RESPONSE_BODY_BYTES // 2)


async def test_an_endless_body_is_read_only_up_to_16_kib(
    fresh: Receiver, new_client: NewClient
) -> None:
    started = time.perf_counter()
    reply = await _send(new_client(), fresh.url(ENDLESS))

    assert time.perf_counter() - started < TIMEOUT_S
    assert reply.status_code == 200
    assert reply.body == "x" * MAX_RESPONSE_BODY_BYTES


async def test_a_trickling_body_cannot_outlast_the_timeout(
    fresh: Receiver, new_client: NewClient
) -> None:
    # Each byte arrives well within the read timeout; only the whole-request limit ends it.
    client = new_client()
    started = time.perf_counter()
    with pytest.raises(RequestTimeout):
        await _send(client, fresh.url(TRICKLE), timeout_s=SHORT_TIMEOUT_S)

    assert time.perf_counter() - started < SHORT_TIMEOUT_S + MARGIN_S


async def test_a_slow_receiver_times_out(fresh: Receiver, new_client: NewClient) -> None:
    client = new_client()
    started = time.perf_counter()
    with pytest.raises(RequestTimeout) as caught:
        await _send(client, fresh.url(SLOW), timeout_s=SHORT_TIMEOUT_S)

    assert time.perf_counter() - started < SHORT_TIMEOUT_S + MARGIN_S
    assert caught.value.code == "timeout"


# -- failures --------------------------------------------------------------------------


async def test_a_refused_connection_is_a_connect_error(new_client: NewClient) -> None:
    # httpx_aiohttp reports this as httpx.ConnectTimeout: it must not become a timeout.
    with pytest.raises(ConnectFailed) as caught:
        await _send(new_client(), f"http://127.0.0.1:{free_port()}/")

    assert caught.value.code == "connect_error"


async def test_a_name_that_does_not_resolve_is_a_connect_error(
    new_client: NewClient, unresolvable: None
) -> None:
    with pytest.raises(ConnectFailed):
        await _send(new_client(), "http://nowhere.invalid/")


async def test_a_receiver_that_hangs_up_is_a_network_error(
    new_client: NewClient, raw_server: Callable[[RawHandler], Awaitable[int]]
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    port = await raw_server(hang_up)
    with pytest.raises(TransportFailed) as caught:
        await _send(new_client(), f"http://127.0.0.1:{port}/")

    assert caught.value.code == "network_error"


async def test_a_reply_that_is_not_http_is_a_network_error(
    new_client: NewClient, raw_server: Callable[[RawHandler], Awaitable[int]]
) -> None:
    async def babble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SMTP READY\r\n\r\n")
        await writer.drain()
        writer.close()

    port = await raw_server(babble)
    with pytest.raises(TransportFailed):
        await _send(new_client(), f"http://127.0.0.1:{port}/")


@pytest.mark.parametrize("url", ["ftp://example.com/", "http://[::1/", "http://:80/"])
async def test_an_unusable_url_is_a_network_error(new_client: NewClient, url: str) -> None:
    with pytest.raises(TransportFailed):
        await _send(new_client(), url)


# -- the guard -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "2130706433",
        "0x7f000001",
        "0177.1",
        "017700000001",
        "127.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "localhost",
        "LOCALHOST.",
        "api.localhost",
    ],
)
async def test_private_literal_hosts_are_blocked_before_sending(
    fresh: Receiver, new_client: NewClient, host: str
) -> None:
    client = new_client(allow_private_targets=False)
    with pytest.raises(TargetBlocked) as caught:
        await _send(client, fresh.url(OK, host=host), allow_private_targets=False)

    assert caught.value.code == "blocked_target"
    assert fresh.received == []


async def test_a_name_resolving_to_a_private_address_is_blocked_at_connect(
    fresh: Receiver, new_client: NewClient, rebind: None
) -> None:
    # Given a name that looks public but now resolves to 127.0.0.1 (DNS rebinding)
    client = new_client(allow_private_targets=False)

    # When the worker sends to it, the resolver's refusal surfaces as TargetBlocked,
    # not as the connect error aiohttp and httpx wrap it in.
    with pytest.raises(TargetBlocked):
        await _send(client, fresh.url(OK, host=REBIND_HOST), allow_private_targets=False)

    # Then the receiver behind the private address heard nothing.
    assert fresh.received == []


async def test_private_targets_are_reached_when_allowed(
    fresh: Receiver, new_client: NewClient, rebind: None
) -> None:
    client = new_client(allow_private_targets=True)
    by_address = await _send(client, fresh.url(OK))
    by_name = await _send(client, fresh.url(OK, host=REBIND_HOST))

    assert (by_address.status_code, by_name.status_code) == (200, 200)
    assert _paths(fresh) == [OK, OK]


@pytest.fixture
def rebind(fake_dns: dict[str, list[str]]) -> None:
    """`rebind.example` resolves to 127.0.0.1, as a rebinding attacker's name would."""
    fake_dns[REBIND_HOST] = ["127.0.0.1"]


@pytest.fixture
def unresolvable(fake_dns: dict[str, list[str]]) -> None:
    """`nowhere.invalid` does not resolve, without asking a DNS server."""
    fake_dns["nowhere.invalid"] = []


class FakeResolver(AbstractResolver):
    """Answers from a table; records what it was asked."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [_result(host, address, port) for address in self.answers[host]]

    async def close(self) -> None:
        self.closed = True


def _result(hostname: str, address: str, port: int) -> ResolveResult:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return ResolveResult(
        hostname=hostname, host=address, port=port, family=family, proto=0, flags=0
    )


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["10.0.0.7"],
        ["169.254.169.254"],
        ["::1"],
        ["fd00::1"],
        ["::ffff:192.168.1.1"],
        ["93.184.216.34", "127.0.0.1"],  # one bad address spoils the answer
    ],
)
async def test_the_resolver_refuses_any_blocked_address(addresses: list[str]) -> None:
    resolver = GuardedResolver(FakeResolver({REBIND_HOST: addresses}))

    with pytest.raises(BlockedResolution):
        await resolver.resolve(REBIND_HOST, 443)


async def test_the_resolver_passes_public_addresses() -> None:
    answers = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    resolver = GuardedResolver(FakeResolver({"example.com": answers}))

    results = await resolver.resolve("example.com", 443)

    assert [result["host"] for result in results] == answers


@pytest.mark.parametrize("host", ["localhost", "db.localhost"])
async def test_the_resolver_refuses_local_names_without_asking(host: str) -> None:
    inner = FakeResolver({})
    resolver = GuardedResolver(inner)

    with pytest.raises(BlockedResolution):
        await resolver.resolve(host, 80)
    assert inner.asked == []


async def test_the_resolver_closes_its_inner_resolver() -> None:
    inner = FakeResolver({})
    await GuardedResolver(inner).close()

    assert inner.closed


def test_blocked_resolution_is_an_os_error_for_aiohttp() -> None:
    # aiohttp wraps only OSErrors from a resolver as a connection error.
    assert issubclass(BlockedResolution, OSError)
    assert not issubclass(aiohttp.ClientError, BlockedResolution)


async def test_a_configuration_header_replaces_a_default_of_another_case() -> None:
    """SPEC 13 allows `Accept` or `Connection` among a configuration's headers: it goes
    out once, in place of ours, not beside it."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    headers = {**HEADERS, "Accept": "application/json", "X-Tenant": "acme"}
    async with httpx.MockTransport(handle) as transport:
        await send(
            transport,
            "http://receiver.example/in",
            body=BODY,
            headers=headers,
            timeout_s=TIMEOUT_S,
            allow_private_targets=True,
        )

    [request] = seen
    names = [name.lower() for name, _ in request.headers.raw]
    assert names.count(b"accept") == 1
    assert request.headers["accept"] == "application/json"
    assert request.headers["x-tenant"] == "acme"
    assert request.headers["connection"] == "keep-alive"
