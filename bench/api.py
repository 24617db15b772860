"""The benchmark's side of the service's API and of the receiver: aiohttp, the lightest
client there is, so that the load generator takes as little of the CPUs as it can."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import aiohttp

from bench.stack import BenchError

SURVEY_ANSWERS: dict[str, Any] = {"q1": "yes", "q2": 3, "notes": "benchmark survey"}
API_TIMEOUT_S = 30.0


class ApiError(BenchError):
    """The API answered another status than the one expected."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Created:
    """One survey the API created, with the three moments around its commit.

    `created_at_s` is the API's `created_at`, taken just before the transaction that
    commits it: latency from it is an upper bound of commit-to-receipt. `acked_s` is
    when the client had the `201`, just after the commit: a lower bound.
    """

    survey_id: str
    sent_s: float
    created_at_s: float
    acked_s: float


class Api:
    """One API client (one key) over one keep-alive pool of `concurrency` connections."""

    def __init__(self, base_url: str, api_key: str, *, concurrency: int) -> None:
        self.base_url = base_url
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_S),
        )

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._session.close()

    async def _call(self, method: str, path: str, *, expect: int, json: Any = None) -> Any:
        async with self._session.request(
            method, self.base_url + path, json=json, headers=self._headers
        ) as response:
            if response.status != expect:
                text = await response.text()
                message = f"{method} {path} answered {response.status}: {text[:500]}"
                raise ApiError(message, status=response.status)
            return await response.json()

    async def create_config(
        self, url: str, events: list[str], *, controls: dict[str, Any] | None = None
    ) -> str:
        body = {"url": url, "subscribed_events": events, **(controls or {})}
        created = await self._call("POST", "/api/v2/config/webhook", expect=201, json=body)
        return str(created["id"])

    async def get_config(self, config_id: str) -> None:
        await self._call("GET", f"/api/v2/config/webhook/{config_id}", expect=200)

    async def create_survey(self, patient_id: str) -> Created:
        body = {"patient_id": patient_id, "answers": SURVEY_ANSWERS}
        sent_s = time.time()
        survey = await self._call("POST", "/api/v2/surveys", expect=201, json=body)
        acked_s = time.time()
        created_at_s = datetime.fromisoformat(survey["created_at"]).timestamp()
        return Created(str(survey["id"]), sent_s, created_at_s, acked_s)

    async def complete_survey(self, survey_id: str) -> None:
        body = {"status": "completed"}
        await self._call("PATCH", f"/api/v2/surveys/{survey_id}", expect=200, json=body)


@dataclass(frozen=True)
class Receipt:
    at_s: float
    webhook_id: str
    survey_id: str | None


class ReceiverClient:
    """Asks the receiver what it got (see `bench.receiver`)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_S))

    async def close(self) -> None:
        await self._session.close()

    async def _get(self, path: str) -> Any:
        async with self._session.get(self.base_url + path) as response:
            response.raise_for_status()
            return await response.json()

    async def distinct(self) -> int:
        return int((await self._get("/count"))["distinct"])

    async def repeated(self) -> int:
        """POSTs of a `webhook-id` received before (one reading of both counts)."""
        count = await self._get("/count")
        return int(count["posts"]) - int(count["distinct"])

    async def reset(self) -> None:
        await self._get("/reset")

    async def dump(self) -> list[Receipt]:
        return [Receipt(float(at), str(wid), sid) for at, wid, sid in await self._get("/dump")]
