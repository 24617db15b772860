"""Receivers for tests, of two kinds, one class each:

- `Receiver`: a real HTTP server on 127.0.0.1, in a thread of its own (so that neither
  a test's event loop nor a blocked test holds it up), for the real transport, real
  workers and real processes. It records every request and answers by path.
- `Script`: an in-process handler for `httpx.MockTransport`, for tests about what the
  service does with an answer, not about HTTP.

`SPEC_HEADERS` are the headers every webhook request carries (SPEC 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.servers import free_port, wait_for

SPEC_HEADERS = frozenset(
    {
        "content-type",
        "x-webhook-infermedica-token",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "user-agent",
    }
)

HOLD_MAX_S = 60.0
"""A body that never ends, or an answer held for the client, gives up after this."""
ENDLESS_CHUNK = b"x" * 65536
ENDLESS_INTERVAL_S = 0.01
"""6.4 MB/s a request: a worker that kept it all would grow by tens of MB a second."""
TRICKLE_INTERVAL_S = 0.1
"""A byte every 0.1 s: never the 16 KiB a worker reads, always something new."""


# -- the real one ------------------------------------------------------------------


@dataclass
class Received:
    at: float
    """`time.time()` when the request arrived."""
    path: str
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers by path:

    - `/ok/*` 200; `/dead/*` 500;
    - `/flaky/N/*` `statuses[path]` (500 unless set) for the first N tries of each
      webhook-id, then 200;
    - `/status/*` whatever `statuses[path]` says (200 unless set);
    - `/turns/S1,S2,.../*` S1, S2, ... to the tries of the path in turn, whatever their
      webhook-id; the last one repeats;
    - `/slow/SECONDS/*` 200 after SECONDS, or nothing once the client has gone away;
    - `/endless/*` 200 and a body that never ends (fast), `/trickle/*` the same a byte
      at a time, until the client goes away;
    - any other path 200.

    Every answer to a path carries the headers in `headers[path]`, and the body in
    `bodies[path]` (else "ok" for a 2xx, "nope" for any other)."""

    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)
    _tries: Counter[tuple[str, str]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str, *, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [item for item in self.received if item.path == path]

    def wait(self, path: str, count: int = 1, *, timeout_s: float = 30.0) -> list[Received]:
        """Wait until `path` has had `count` requests at least; all it has had."""
        return list(
            wait_for(
                lambda: len(self.at(path)) >= count and self.at(path),
                timeout_s=timeout_s,
                what=f"{count} requests on {path}",
            )
        )

    def clear(self) -> None:
        """Forget every request (and try) so far."""
        with self._lock:
            self.received.clear()
            self._tries.clear()

    def _status(self, path: str, webhook_id: str) -> int:
        parts = path.strip("/").split("/")
        if parts[0] == "flaky":
            self._tries[(path, webhook_id)] += 1
            failing = self._tries[(path, webhook_id)] <= int(parts[1])
            return self.statuses.get(path, 500) if failing else 200
        if parts[0] == "turns":
            self._tries[(path, "")] += 1
            turns = [int(status) for status in parts[1].split(",")]
            return turns[min(self._tries[(path, "")], len(turns)) - 1]
        if parts[0] == "dead":
            return 500
        if parts[0] == "status":
            return self.statuses.get(path, 200)
        return 200

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        item = Received(time.time(), request.url.path, dict(request.headers), body)
        with self._lock:
            self.received.append(item)
            status = self._status(item.path, item.headers.get("webhook-id", ""))
            headers = self.headers.get(item.path)
            content = self.bodies.get(item.path, b"ok" if 200 <= status < 300 else b"nope")
        kind, _, rest = item.path.strip("/").partition("/")
        if kind == "endless":
            return Endless(chunk=ENDLESS_CHUNK, interval_s=ENDLESS_INTERVAL_S)
        if kind == "trickle":
            return Endless(chunk=b"x", interval_s=TRICKLE_INTERVAL_S)
        if kind == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(disconnected(request), float(rest.split("/")[0]))
        return Response(content, status_code=status, headers=headers, media_type="text/plain")

    @contextlib.contextmanager
    def running(self) -> Iterator[Receiver]:
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", ws="none"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started, timeout_s=10, what="the receiver")
        try:
            yield self
        finally:
            server.should_exit = True
            thread.join(timeout=10)


class Endless(Response):
    """200, then `chunk` every `interval_s` until the client goes away (or `HOLD_MAX_S`);
    `on_end` runs when it does."""

    def __init__(
        self, *, chunk: bytes, interval_s: float, on_end: Callable[[], None] = lambda: None
    ) -> None:
        super().__init__(status_code=200)
        # No Content-Length: the body has no end.
        self.raw_headers = [(b"content-type", b"application/octet-stream")]
        self._on_end = on_end
        self._chunk = chunk
        self._interval_s = interval_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            deadline = time.monotonic() + HOLD_MAX_S
            while not gone.is_set() and time.monotonic() < deadline:
                await send({"type": "http.response.body", "body": self._chunk, "more_body": True})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), self._interval_s)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            self._on_end()


async def disconnected(request: Request) -> None:
    """Return once the client has gone away (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# -- the scripted one ------------------------------------------------------------------

Reply = httpx.Response | Exception


@dataclass
class Script:
    """For `httpx.MockTransport(script.handle)`: answers a request to a host in
    `by_host` with that host's reply, any other with `replies` in turn (counting every
    request; the last one repeats); a reply that is an exception is raised, as a
    transport raises it. Keeps every request in `requests`."""

    replies: list[Reply] = field(default_factory=lambda: [httpx.Response(200, text="ok")])
    by_host: dict[str, Reply] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host in self.by_host:
            reply = self.by_host[request.url.host]
        else:
            reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        if isinstance(reply, Exception):
            raise reply
        return reply
