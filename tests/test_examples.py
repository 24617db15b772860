"""`examples/receiver.py`, the receiver the README tells a newcomer to run: it checks the
token header, verifies the Standard Webhooks signature, rejects stale timestamps and
drops repeated `webhook-id`s. Driven in-process through `httpx.ASGITransport`."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from standardwebhooks import Webhook
from starlette.applications import Starlette

from core.configs import new_authorization_token, new_signing_secret
from tests.servers import free_port, port_open, wait_for

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "receiver.py"
TOKEN = new_authorization_token()
SECRET = new_signing_secret()
BODY = json.dumps(
    {"event_type": "survey_created", "content": {"id": "s-1", "patient_id": "p-1"}}
).encode()


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("examples_receiver", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


create_receiver: Callable[..., Starlette] = _load_example().create_receiver


@pytest.fixture
async def receiver() -> AsyncIterator[httpx.AsyncClient]:
    app = create_receiver(token=TOKEN, secret=SECRET)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        yield client


def _headers(
    *,
    webhook_id: str | None = None,
    at: datetime | None = None,
    secret: str = SECRET,
    token: str = TOKEN,
    body: bytes = BODY,
) -> dict[str, str]:
    """The headers the service sends (SPEC 6), signed by the official library."""
    webhook_id = webhook_id or str(uuid.uuid4())
    at = at or datetime.now(UTC)
    return {
        "content-type": "application/json",
        "x-webhook-infermedica-token": token,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, at, body.decode()),
    }


async def test_a_correctly_signed_request_is_accepted_and_printed(
    receiver: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    headers = _headers()

    response = await receiver.post("/webhook", content=BODY, headers=headers)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"verified survey_created {headers['webhook-id']}: ")
    assert json.loads(line.split(": ", 1)[1]) == json.loads(BODY)["content"]


async def test_during_a_rotation_a_request_signed_by_both_secrets_is_accepted(
    receiver: httpx.AsyncClient,
) -> None:
    headers = _headers()
    old = _headers(webhook_id=headers["webhook-id"], secret=new_signing_secret())
    headers["webhook-signature"] = f"{old['webhook-signature']} {headers['webhook-signature']}"

    response = await receiver.post("/webhook", content=BODY, headers=headers)

    assert response.status_code == 200


@pytest.mark.parametrize("token", ["", "wrong-token-0123456789", TOKEN + "x"])
async def test_a_wrong_or_missing_token_is_401(
    receiver: httpx.AsyncClient, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    headers = _headers(token=token)
    if not token:
        del headers["x-webhook-infermedica-token"]

    response = await receiver.post("/webhook", content=BODY, headers=headers)

    assert response.status_code == 401
    assert capsys.readouterr().out == ""


async def test_a_signature_by_another_secret_is_400(
    receiver: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    response = await receiver.post(
        "/webhook", content=BODY, headers=_headers(secret=new_signing_secret())
    )

    assert response.status_code == 400
    assert capsys.readouterr().out == ""


async def test_a_body_changed_after_signing_is_400(receiver: httpx.AsyncClient) -> None:
    headers = _headers()
    tampered = BODY.replace(b"p-1", b"p-2")

    response = await receiver.post("/webhook", content=tampered, headers=headers)

    assert response.status_code == 400


async def test_a_request_without_signature_headers_is_400(receiver: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json", "x-webhook-infermedica-token": TOKEN}

    response = await receiver.post("/webhook", content=BODY, headers=headers)

    assert response.status_code == 400


@pytest.mark.parametrize("offset", [timedelta(minutes=-10), timedelta(minutes=10)])
async def test_a_stale_or_future_timestamp_is_400_even_when_correctly_signed(
    receiver: httpx.AsyncClient, offset: timedelta
) -> None:
    headers = _headers(at=datetime.now(UTC) + offset)

    response = await receiver.post("/webhook", content=BODY, headers=headers)

    assert response.status_code == 400


async def test_a_repeated_webhook_id_is_answered_as_a_duplicate_and_printed_once(
    receiver: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a webhook that was received and printed
    webhook_id = str(uuid.uuid4())
    first = await receiver.post("/webhook", content=BODY, headers=_headers(webhook_id=webhook_id))
    assert first.status_code == 200
    # When the service retries it (same webhook-id, a new timestamp and signature)
    again = await receiver.post("/webhook", content=BODY, headers=_headers(webhook_id=webhook_id))
    # Then it is acknowledged, so the service stops retrying, but not processed twice
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate ignored"}
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and webhook_id in lines[0]


async def test_a_rejected_request_does_not_mark_its_webhook_id_as_seen(
    receiver: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    webhook_id = str(uuid.uuid4())
    forged = _headers(webhook_id=webhook_id, secret=new_signing_secret())
    assert (await receiver.post("/webhook", content=BODY, headers=forged)).status_code == 400

    genuine = await receiver.post("/webhook", content=BODY, headers=_headers(webhook_id=webhook_id))

    assert genuine.json() == {"status": "ok"}
    assert webhook_id in capsys.readouterr().out


async def test_only_post_on_webhook_is_served(receiver: httpx.AsyncClient) -> None:
    assert (await receiver.get("/webhook")).status_code == 405
    assert (await receiver.post("/other", content=BODY, headers=_headers())).status_code == 404


@pytest.mark.e2e
def test_the_script_runs_as_the_readme_says(tmp_path: Path) -> None:
    """`WEBHOOK_TOKEN=... WEBHOOK_SECRET=... python examples/receiver.py`, on RECEIVER_PORT."""
    port = free_port()
    env = {
        **os.environ,
        "WEBHOOK_TOKEN": TOKEN,
        "WEBHOOK_SECRET": SECRET,
        "RECEIVER_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def started() -> bool:
            assert process.poll() is None, process.communicate()
            return port_open("127.0.0.1", port)

        wait_for(started, timeout_s=15, what="the receiver to start")
        headers = _headers()
        response = httpx.post(
            f"http://127.0.0.1:{port}/webhook", content=BODY, headers=headers, timeout=5
        )
        assert response.status_code == 200, response.text
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    assert f"verified survey_created {headers['webhook-id']}: " in out, (out, err)
