"""Concurrent writers never see "database is locked" (the issue's SQLite proof).

Two real `webhooks web` processes share one SQLite file and take hundreds of
concurrent writes through the API; the in-process variant runs on both backends.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import WEBHOOKS, process_env, run_webhooks, web_server
from tests.servers import free_port
from tests.service.support import CONFIGS, config_body

CREATES = 200
UPDATES = 100
IN_PROCESS_WRITES = 100


async def _fire(
    client: httpx.AsyncClient, requests: list[tuple[str, str, dict[str, Any] | None]]
) -> list[httpx.Response | BaseException]:
    async def one(method: str, url: str, body: dict[str, Any] | None) -> httpx.Response:
        return await client.request(method, url, json=body)

    return await asyncio.gather(*(one(*r) for r in requests), return_exceptions=True)


def _failures(answers: list[httpx.Response | BaseException], status: int) -> list[str]:
    return [
        repr(answer) if isinstance(answer, BaseException) else f"{answer.status_code} {answer.text}"
        for answer in answers
        if isinstance(answer, BaseException) or answer.status_code != status
    ]


@pytest.mark.e2e
async def test_two_web_processes_on_one_sqlite_file_take_concurrent_writes(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    env = process_env(DATABASE_URL=url, WEBHOOKS_ALLOW_PRIVATE_TARGETS="1")
    with ExitStack() as stack:
        # Both start on a database that does not exist yet: they also race to migrate it.
        bases = [
            stack.enter_context(
                web_server(
                    [WEBHOOKS, "web"],
                    env={**env, "PORT": str(port)},
                    port=port,
                    log=tmp_path / f"web-{n}.log",
                )
            )
            for n, port in enumerate((free_port(), free_port()))
        ]
        created = run_webhooks("client", "create", "load", env=env)
        assert created.returncode == 0, created.stderr
        headers = {"Authorization": f"Bearer {json.loads(created.stdout)['api_key']}"}
        # One connection a request: no keep-alive connection goes stale between phases.
        limits = httpx.Limits(max_connections=CREATES, max_keepalive_connections=0)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
            started = time.monotonic()
            creates = await _fire(
                client,
                [
                    ("POST", bases[n % 2] + CONFIGS, config_body(url=f"https://example.com/{n}"))
                    for n in range(CREATES)
                ],
            )
            creates_s = time.monotonic() - started
            ids = [
                a.json()["id"] for a in creates if isinstance(a, httpx.Response) and a.is_success
            ]
            updates = await _fire(
                client,
                [
                    (
                        (
                            "PATCH",
                            f"{bases[n % 2]}{CONFIGS}/{config_id}",
                            {"url": f"https://e.org/{n}"},
                        )
                        if n % 2
                        else ("POST", f"{bases[n % 2]}{CONFIGS}/{config_id}/secret/rotate", None)
                    )
                    for n, config_id in enumerate(ids[:UPDATES])
                ],
            )
            elapsed = time.monotonic() - started
            listed = [(await client.get(base + CONFIGS)).json() for base in bases]

    errors = _failures(creates, 201) + _failures(updates, 200)
    writes = len(creates) + len(updates)
    print(
        f"\nconcurrency (2 web processes, one SQLite file): {writes} writes "
        f"({len(creates)} creates, {len(updates)} updates/rotations), "
        f"{len(errors)} errors, {elapsed:.2f}s (creates {creates_s:.2f}s), "
        f"{writes / elapsed:.0f} writes/s"
    )
    assert not errors, errors[:5]
    assert len(ids) == CREATES
    for configs in listed:
        assert sorted(c["id"] for c in configs) == sorted(ids)
    for n in range(2):
        log = (tmp_path / f"web-{n}.log").read_text()
        assert "locked" not in log.lower() and "Traceback" not in log, log


async def test_concurrent_writes_in_process(api: httpx.AsyncClient, auth: dict[str, str]) -> None:
    started = time.monotonic()
    creates = await asyncio.gather(
        *(
            api.post(CONFIGS, json=config_body(url=f"https://example.com/{n}"), headers=auth)
            for n in range(IN_PROCESS_WRITES)
        ),
        return_exceptions=True,
    )
    assert not _failures(list(creates), 201)
    ids = [a.json()["id"] for a in creates if isinstance(a, httpx.Response)]
    rotations = await asyncio.gather(
        *(api.post(f"{CONFIGS}/{config_id}/secret/rotate", headers=auth) for config_id in ids),
        *(
            api.patch(f"{CONFIGS}/{config_id}", json={"url": "https://e.org/"}, headers=auth)
            for config_id in ids
        ),
        return_exceptions=True,
    )
    elapsed = time.monotonic() - started

    errors = _failures(list(rotations), 200)
    writes = len(creates) + len(rotations)
    print(f"\nconcurrency (in-process): {writes} writes, {len(errors)} errors, {elapsed:.2f}s")
    assert not errors, errors[:5]
    listed = (await api.get(CONFIGS, headers=auth)).json()
    assert sorted(c["id"] for c in listed) == sorted(ids)
    assert {c["url"] for c in listed} == {"https://e.org/"}
