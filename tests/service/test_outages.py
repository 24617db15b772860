"""A database that goes away while the API runs (PostgreSQL behind a TCP relay that the
test cuts): every request answers 503 `unavailable` in the SPEC 4 envelope, never 500
and never a hang; `/readyz` says which dependency is away; and once the database is
back, the same process serves again without a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.engine import make_url

from core.clients import create_client
from service.app import create_app
from tests.conftest import make_settings
from tests.outbox.helpers import eventually
from tests.servers import TcpProxy
from tests.service.support import assert_error

SURVEYS = "/api/v2/surveys"
# Far beyond a refused connection's few milliseconds: a request that takes this long hangs.
HANG_S = 5.0


@pytest.fixture
async def relay(pg_url: str) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(make_url(pg_url).port or 5432)
    await proxy.restore()
    yield proxy
    await proxy.cut()


async def test_the_api_answers_503_while_the_database_is_away_and_recovers(
    pg_url: str, relay: TcpProxy
) -> None:
    url = make_url(pg_url).set(host="127.0.0.1", port=relay.port)
    app = create_app(make_settings(url.render_as_string(hide_password=False)))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=HANG_S
        ) as api,
    ):
        key = (await create_client(app.state.db, "clinic"))["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        survey = await api.post(SURVEYS, json={"patient_id": "p-1"}, headers=auth)
        assert survey.status_code == 201, survey.text

        # When the database goes away
        await relay.cut()

        # Then reads and writes alike are 503 `unavailable`, with a hint when to retry
        for response in [
            await api.post(SURVEYS, json={"patient_id": "p-2"}, headers=auth),
            await api.get(f"{SURVEYS}/{survey.json()['id']}", headers=auth),
            await api.get("/api/v2/config/webhook", headers=auth),
        ]:
            assert assert_error(response, 503)["code"] == "unavailable"
            assert response.headers["retry-after"].isdigit()
        ready = await api.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("error")

        # And once it is back, the same app serves again
        await relay.restore()

        async def serving() -> bool:
            response = await api.post(SURVEYS, json={"patient_id": "p-3"}, headers=auth)
            return response.status_code == 201

        await eventually(serving, timeout_s=10, every_s=0.2)
        assert (await api.get("/readyz")).status_code == 200
