"""The baseline: the physical limit of this machine for what a worker does on the wire.

The fastest plain client (aiohttp) POSTs the body and headers of a real delivery
straight to the receiver at the workers' total concurrency, with nothing else around
it: no database, no queue, no signing. `drive_httpx` does the same through httpx over
httpx-aiohttp, the worker's transport, to show what the client layer costs.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import httpx

from bench.api import SURVEY_ANSWERS
from bench.progress import Progress
from bench.stack import BenchError

# What a real delivery carries: a 43-character token (`secrets.token_urlsafe(32)`), a
# 36-character webhook id, a `v1,` + 44-character base64 HMAC-SHA256 signature.
_TOKEN = "t" * 43
_SIGNATURE = "v1," + "s" * 43 + "="
USER_AGENT = "webhooks-delivery/0.1"


def delivery_body() -> bytes:
    """A `survey_created` body the size of the pipeline's."""
    content = {
        "id": str(uuid.uuid4()),
        "patient_id": "patient-000000",
        "status": "in_progress",
        "answers": SURVEY_ANSWERS,
        "created_at": datetime.now(UTC).isoformat(),
        "completed_at": None,
    }
    body = {"event_type": "survey_created", "content": content}
    return json.dumps(body, separators=(",", ":")).encode()


def delivery_headers() -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-webhook-infermedica-token": _TOKEN,
        "webhook-id": str(uuid.uuid4()),
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": _SIGNATURE,
        "user-agent": USER_AGENT,
    }


@dataclass(frozen=True)
class Driven:
    posts: int
    elapsed_s: float

    @property
    def per_s(self) -> float:
        return self.posts / self.elapsed_s if self.elapsed_s > 0 else 0.0


Post = Callable[[bytes, dict[str, str]], Awaitable[int]]


async def _drive(
    post: Post, *, concurrency: int, duration_s: float, progress: Progress, label: str
) -> Driven:
    body = delivery_body()
    # Open every connection before the clock starts.
    await asyncio.gather(*(post(body, delivery_headers()) for _ in range(concurrency)))
    done = 0
    deadline = time.monotonic() + duration_s

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            status = await post(body, delivery_headers())
            if status != 200:
                raise BenchError(f"the receiver answered {status} to a baseline POST")
            done += 1

    async def report() -> None:
        while True:
            progress.show(label, f"{done} POSTs")
            await asyncio.sleep(0.5)

    reporter = asyncio.create_task(report())
    started = time.monotonic()
    try:
        await asyncio.gather(*(loop() for _ in range(concurrency)))
    finally:
        reporter.cancel()
    return Driven(done, time.monotonic() - started)


async def drive_aiohttp(
    url: str, *, concurrency: int, duration_s: float, progress: Progress
) -> Driven:
    """POST for `duration_s` from `concurrency` tasks over one aiohttp session."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(body: bytes, headers: dict[str, str]) -> int:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status

        return await _drive(
            post,
            concurrency=concurrency,
            duration_s=duration_s,
            progress=progress,
            label="baseline (aiohttp)",
        )


async def drive_httpx(
    url: str, *, concurrency: int, duration_s: float, progress: Progress
) -> Driven:
    """The same through `httpx.AsyncClient` over httpx-aiohttp, as the worker sends."""
    from httpx_aiohttp import AiohttpTransport

    def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

    async with httpx.AsyncClient(transport=AiohttpTransport(client=session)) as client:

        async def post(body: bytes, headers: dict[str, str]) -> int:
            response = await client.post(url, content=body, headers=headers)
            return response.status_code

        return await _drive(
            post,
            concurrency=concurrency,
            duration_s=duration_s,
            progress=progress,
            label="baseline (httpx over aiohttp)",
        )
