"""The delivery audit (SPEC 8) through the API on both backends: the list with filters
and cursor pagination, one delivery with its attempts, redeliver, recover and ping."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from core.clock import utcnow
from core.database import Database
from core.settings import Settings
from core.tables import attempts
from service.app import create_app
from tests.conftest import NewClient
from tests.outbox.helpers import delivery, disable_config, new_delivery
from tests.service.support import CONFIGS, Enqueued, assert_error, create_config, error_fields

ITEM_FIELDS = {
    "id",
    "event_id",
    "event_type",
    "status",
    "attempt_count",
    "created_at",
    "last_attempt_at",
    "next_attempt_at",
    "delivered_at",
}
ATTEMPT_FIELDS = {"number", "started_at", "duration_ms", "status_code", "error", "response_body"}


@pytest.fixture
def enqueued() -> Enqueued:
    return Enqueued()


@pytest.fixture
async def app(settings: Settings, enqueued: Enqueued) -> AsyncIterator[Starlette]:
    """The app of `tests.conftest`, with a recording `enqueue`."""
    application = create_app(settings, enqueue=enqueued)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def db(app: Starlette) -> Database:
    database: Database = app.state.db
    return database


@pytest.fixture
async def client(new_client: NewClient) -> dict[str, str]:
    return await new_client()


def _h(client: dict[str, str]) -> dict[str, str]:
    return {"Authorization": client["Authorization"]}


async def _config(
    api: httpx.AsyncClient, client: dict[str, str], **overrides: Any
) -> dict[str, Any]:
    """A configuration made through the API, with its `client_id` for direct inserts."""
    created = await create_config(api, _h(client), **overrides)
    return {**created, "client_id": client["id"]}


def _base(config: dict[str, Any]) -> str:
    return f"{CONFIGS}/{config['id']}"


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.utcoffset() == timedelta(0), text
    return moment


async def _list(
    api: httpx.AsyncClient, client: dict[str, str], config: dict[str, Any], **params: Any
) -> dict[str, Any]:
    response = await api.get(f"{_base(config)}/deliveries", params=params, headers=_h(client))
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    assert set(page) == {"items", "next_cursor"}
    return page


async def _all_pages(
    api: httpx.AsyncClient, client: dict[str, str], config: dict[str, Any], **params: Any
) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        extra: dict[str, str] = {"cursor": cursor} if cursor else {}
        page = await _list(api, client, config, **params, **extra)
        pages.append([item["id"] for item in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "pagination does not end"


async def _spread(
    db: Database, config: dict[str, Any], times: Sequence[datetime], **columns: Any
) -> list[str]:
    """One delivery created at each of `times`; ids newest first."""
    made = [(at, await new_delivery(db, config, created_at=at, **columns)) for at in times]
    return [delivery_id for _, delivery_id in sorted(made, key=lambda pair: pair[0], reverse=True)]


# --- list -------------------------------------------------------------------------------


async def test_the_list_is_newest_first_with_the_spec_fields(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    config = await _config(api, client)
    now = utcnow()
    ids = await _spread(db, config, [now - timedelta(minutes=m) for m in (3, 1, 5, 2, 4)])

    page = await _list(api, client, config)

    assert [item["id"] for item in page["items"]] == ids
    assert page["next_cursor"] is None
    item = page["items"][0]
    assert set(item) == ITEM_FIELDS
    row = await delivery(db, ids[0])
    assert item["event_id"] == row["event_id"]
    assert item["event_type"] == "survey_created"
    assert item["status"] == "pending"
    assert item["attempt_count"] == 0
    assert _moment(item["created_at"]) == row["created_at"]
    assert _moment(item["next_attempt_at"]) == row["next_attempt_at"]
    assert item["last_attempt_at"] is None and item["delivered_at"] is None


async def test_the_list_shows_only_that_configurations_deliveries(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    mine, other = await _config(api, client), await _config(api, client)
    ids = await _spread(db, mine, [utcnow()])
    await _spread(db, other, [utcnow()])

    page = await _list(api, client, mine)

    assert [item["id"] for item in page["items"]] == ids


async def test_an_empty_list(api: httpx.AsyncClient, client: dict[str, str]) -> None:
    config = await _config(api, client)
    assert await _list(api, client, config) == {"items": [], "next_cursor": None}


async def test_filter_by_status(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    config = await _config(api, client)
    now = utcnow()
    failed = await _spread(
        db, config, [now - timedelta(seconds=s) for s in (1, 2)], status="failed"
    )
    await _spread(db, config, [now - timedelta(seconds=3)], status="delivered")
    await _spread(db, config, [now - timedelta(seconds=4)])

    page = await _list(api, client, config, status="failed")

    assert [item["id"] for item in page["items"]] == failed
    assert all(item["status"] == "failed" for item in page["items"])
    assert len((await _list(api, client, config, status="pending"))["items"]) == 1
    assert (await _list(api, client, config, status="held"))["items"] == []


async def test_filter_by_event_type(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    config = await _config(api, client)
    now = utcnow()
    finished = await _spread(db, config, [now], event_type="survey_finished")
    await _spread(db, config, [now - timedelta(seconds=1)], event_type="survey_created")

    page = await _list(api, client, config, event_type="survey_finished")

    assert [item["id"] for item in page["items"]] == finished


async def test_filter_by_since_and_until(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    config = await _config(api, client)
    base = utcnow().replace(microsecond=0) - timedelta(days=1)
    ids = await _spread(db, config, [base + timedelta(hours=h) for h in range(6)])
    by_hour = list(reversed(ids))  # by_hour[h] was created at base + h hours

    def at(hours: float) -> str:
        return (base + timedelta(hours=hours)).isoformat()

    since = await _list(api, client, config, since=at(2.5))
    until = await _list(api, client, config, until=at(1.5))
    window = await _list(api, client, config, since=at(0.5), until=at(3.5))
    zulu = await _list(api, client, config, since=at(4.5).replace("+00:00", "Z"))

    assert [item["id"] for item in since["items"]] == [by_hour[5], by_hour[4], by_hour[3]]
    assert [item["id"] for item in until["items"]] == [by_hour[1], by_hour[0]]
    assert [item["id"] for item in window["items"]] == [by_hour[3], by_hour[2], by_hour[1]]
    assert [item["id"] for item in zulu["items"]] == [by_hour[5]]


async def test_since_in_another_offset_means_the_same_instant(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    config = await _config(api, client)
    base = utcnow().replace(microsecond=0) - timedelta(hours=5)
    ids = await _spread(db, config, [base, base + timedelta(hours=2)])

    # base + 1 h, written in UTC+02:00
    since = (base + timedelta(hours=3)).replace(tzinfo=None).isoformat() + "+02:00"
    page = await _list(api, client, config, since=since)

    assert [item["id"] for item in page["items"]] == ids[:1]


# --- pagination ---------------------------------------------------------------------------


async def test_cursor_pagination_has_no_gaps_and_no_overlap(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    config = await _config(api, client)
    now = utcnow()
    ids = await _spread(db, config, [now - timedelta(seconds=s) for s in range(25)])

    pages = await _all_pages(api, client, config, limit=10)

    assert [len(page) for page in pages] == [10, 10, 5]
    assert [i for page in pages for i in page] == ids


async def test_pagination_is_stable_when_deliveries_share_a_creation_time(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    # A fan-out creates all deliveries of a batch with one timestamp
    config = await _config(api, client)
    now = utcnow()
    times = [now - timedelta(seconds=s // 5) for s in range(25)]
    await _spread(db, config, times)

    pages = await _all_pages(api, client, config, limit=10)

    listed = [i for page in pages for i in page]
    assert [len(page) for page in pages] == [10, 10, 5]
    assert len(set(listed)) == 25
    everything = await _list(api, client, config, limit=100)
    assert listed == [item["id"] for item in everything["items"]]


async def test_a_full_last_page_has_no_next_cursor(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    config = await _config(api, client)
    now = utcnow()
    await _spread(db, config, [now - timedelta(seconds=s) for s in range(20)])

    pages = await _all_pages(api, client, config, limit=10)

    assert [len(page) for page in pages] == [10, 10]


async def test_pagination_keeps_the_filters(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    config = await _config(api, client)
    now = utcnow()
    failed = await _spread(
        db, config, [now - timedelta(seconds=2 * s) for s in range(7)], status="failed"
    )
    await _spread(db, config, [now - timedelta(seconds=2 * s + 1) for s in range(7)])

    pages = await _all_pages(api, client, config, limit=3, status="failed")

    assert [i for page in pages for i in page] == failed
    assert [len(page) for page in pages] == [3, 3, 1]


async def test_the_default_limit_is_50(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    config = await _config(api, client)
    now = utcnow()
    await _spread(db, config, [now - timedelta(seconds=s) for s in range(51)])

    page = await _list(api, client, config)

    assert len(page["items"]) == 50
    assert page["next_cursor"] is not None


# --- query validation -----------------------------------------------------------------


_BAD_TIMES = [
    "yesterday",
    # numbers: SPEC 8 refuses them, with no Unix-time guessing
    "0",
    "0.5",
    "1700000000",
    "1700000000.5",
    "-1",
    "1e9",
    "1700000000x",
    # no offset
    "2024-01-01T00:00:00",
    "2024-01-01T00:00:00.5",
    "2024-01-01 00:00:00",
    "2024-01-01",
    # not RFC 3339
    "2024-01-01T00:00:00+0000",
    "2024-01-01T00:00Z",
    "2024-13-01T00:00:00Z",
    "2023-02-29T00:00:00Z",
    "",
    # valid ISO 8601 whose UTC equivalent is before year 1 or after year 9999
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
]
# Each names the same instant as `_GOOD_TIMES[0]`.
_GOOD_TIMES = [
    "2024-01-01T12:00:00Z",
    "2024-01-01T12:00:00+00:00",
    "2024-01-01T12:00:00-00:00",
    "2024-01-01T12:00:00.000Z",
    "2024-01-01T14:00:00+02:00",
    "2024-01-01T07:00:00-05:00",
]
_BAD_QUERIES = [
    *(
        ("limit", limit)
        for limit in ["0", "101", "-1", "abc", str(10**30), "1.5", "", "5.0", " 5", "+5", "5_0"]
    ),
    *((name, value) for name in ("since", "until") for value in _BAD_TIMES),
    ("status", "sent"),
    ("status", "PENDING"),
    ("event_type", "survey_deleted"),
]


@pytest.mark.parametrize(("name", "value"), _BAD_QUERIES)
async def test_an_invalid_query_value_is_a_422_naming_it(
    api: httpx.AsyncClient, client: dict[str, str], name: str, value: str
) -> None:
    config = await _config(api, client)
    response = await api.get(
        f"{_base(config)}/deliveries", params={name: value}, headers=_h(client)
    )
    assert error_fields(response) == [name]


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("value", _GOOD_TIMES)
async def test_a_query_time_with_an_offset_is_that_instant(
    api: httpx.AsyncClient, db: Database, client: dict[str, str], name: str, value: str
) -> None:
    config = await _config(api, client)
    noon = datetime.fromisoformat(_GOOD_TIMES[0])
    at_noon, just_before = await _spread(db, config, [noon, noon - timedelta(seconds=1)])

    page = await _list(api, client, config, **{name: value})

    expected = {"since": [at_noon], "until": [just_before]}[name]
    assert [item["id"] for item in page["items"]] == expected


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!!",
        "=",
        _b64("no separator"),
        _b64("a|b|c"),
        _b64("not a time|" + str(uuid.uuid4())),
        _b64("2024-01-01T00:00:00|" + str(uuid.uuid4())),
        base64.urlsafe_b64encode(b"\xff\xfe|x").decode(),
        "x" * 600,
        _b64("2024-01-01T00:00:00+00:00|\x00"),
        _b64("2024-01-01T00:00:00+00:00|not a delivery id"),
    ],
)
async def test_a_garbage_cursor_is_a_422(
    api: httpx.AsyncClient, client: dict[str, str], cursor: str
) -> None:
    config = await _config(api, client)
    response = await api.get(
        f"{_base(config)}/deliveries", params={"cursor": cursor}, headers=_h(client)
    )
    assert error_fields(response) == ["cursor"]


async def test_a_cursor_outside_the_utc_range_is_a_422(
    api: httpx.AsyncClient, client: dict[str, str]
) -> None:
    config = await _config(api, client)
    cursor = _b64("0001-01-01T00:00:00+01:00|" + str(uuid.uuid4()))
    response = await api.get(
        f"{_base(config)}/deliveries", params={"cursor": cursor}, headers=_h(client)
    )
    assert error_fields(response) == ["cursor"]


# --- ownership ----------------------------------------------------------------------------


async def test_another_clients_configuration_is_not_found(
    api: httpx.AsyncClient,
    db: Database,
    client: dict[str, str],
    new_client: NewClient,
    enqueued: Enqueued,
) -> None:
    config = await _config(api, client)
    [delivery_id] = await _spread(db, config, [utcnow()], status="failed")
    intruder = _h(await new_client())
    base = _base(config)
    since = {"since": (utcnow() - timedelta(days=1)).isoformat()}

    responses = [
        await api.get(f"{base}/deliveries", headers=intruder),
        await api.get(f"{base}/deliveries/{delivery_id}", headers=intruder),
        await api.post(f"{base}/deliveries/{delivery_id}/redeliver", headers=intruder),
        await api.post(f"{base}/recover", json=since, headers=intruder),
        await api.post(f"{base}/ping", headers=intruder),
    ]

    for response in responses:
        assert assert_error(response, 404)["code"] == "not_found"
    assert (await delivery(db, delivery_id))["status"] == "failed"
    assert enqueued == []


async def test_a_delivery_of_another_configuration_is_not_found(
    api: httpx.AsyncClient,
    db: Database,
    client: dict[str, str],
    new_client: NewClient,
    enqueued: Enqueued,
) -> None:
    mine = await _config(api, client)
    sibling = await _config(api, client)
    other_client = await new_client()
    theirs = await _config(api, other_client)
    [of_sibling] = await _spread(db, sibling, [utcnow()], status="failed")
    [of_theirs] = await _spread(db, theirs, [utcnow()], status="failed")

    for delivery_id in (of_sibling, of_theirs, str(uuid.uuid4())):
        shown = await api.get(f"{_base(mine)}/deliveries/{delivery_id}", headers=_h(client))
        again = await api.post(
            f"{_base(mine)}/deliveries/{delivery_id}/redeliver", headers=_h(client)
        )
        assert_error(shown, 404)
        assert_error(again, 404)
    assert (await delivery(db, of_sibling))["status"] == "failed"
    assert (await delivery(db, of_theirs))["status"] == "failed"
    assert enqueued == []


@pytest.mark.parametrize("delivery_id", ["not-a-uuid", "%00", "1%20OR%201=1"])
async def test_a_malformed_delivery_id_is_not_found(
    api: httpx.AsyncClient, client: dict[str, str], delivery_id: str
) -> None:
    config = await _config(api, client)
    for method, path in [
        ("GET", f"{_base(config)}/deliveries/{delivery_id}"),
        ("POST", f"{_base(config)}/deliveries/{delivery_id}/redeliver"),
    ]:
        assert_error(await api.request(method, path, headers=_h(client)), 404)


async def test_a_deleted_configurations_audit_is_not_found(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    config = await _config(api, client)
    await _spread(db, config, [utcnow()])
    deleted = await api.delete(_base(config), headers=_h(client))
    assert deleted.status_code == 200, deleted.text

    response = await api.get(f"{_base(config)}/deliveries", headers=_h(client))

    assert_error(response, 404)


# --- one delivery -------------------------------------------------------------------------


async def test_the_detail_has_the_item_and_its_attempts(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    # Given a delivery with two attempts
    config = await _config(api, client)
    now = utcnow()
    [delivery_id] = await _spread(
        db,
        config,
        [now - timedelta(minutes=1)],
        status="failed",
        attempt_count=2,
        last_attempt_at=now - timedelta(seconds=10),
    )
    for number, started, code, error, body in [
        (2, now - timedelta(seconds=10), None, "timeout", None),
        (1, now - timedelta(seconds=50), 500, "http_status", "oops"),
    ]:
        await db.execute(
            attempts.insert().values(
                delivery_id=delivery_id,
                number=number,
                started_at=started,
                duration_ms=120 * number,
                status_code=code,
                error=error,
                response_body=body,
            )
        )

    # When it is shown
    response = await api.get(f"{_base(config)}/deliveries/{delivery_id}", headers=_h(client))

    # Then it carries the list item's fields and its attempts in order
    assert response.status_code == 200, response.text
    detail = response.json()
    assert set(detail) == ITEM_FIELDS | {"attempts", "waiting_reason", "headers"}
    listed = (await _list(api, client, config))["items"][0]
    assert {key: detail[key] for key in ITEM_FIELDS} == listed
    assert detail["status"] == "failed" and detail["attempt_count"] == 2
    first, second = detail["attempts"]
    assert set(first) == set(second) == ATTEMPT_FIELDS
    assert (first["number"], first["status_code"], first["error"]) == (1, 500, "http_status")
    assert (first["duration_ms"], first["response_body"]) == (120, "oops")
    assert _moment(first["started_at"]) == now - timedelta(seconds=50)
    assert (second["number"], second["status_code"], second["error"]) == (2, None, "timeout")
    assert second["response_body"] is None


async def test_a_delivery_without_attempts_has_an_empty_list(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    config = await _config(api, client)
    [delivery_id] = await _spread(db, config, [utcnow()])

    response = await api.get(f"{_base(config)}/deliveries/{delivery_id}", headers=_h(client))

    assert response.status_code == 200, response.text
    assert response.json()["attempts"] == []


# --- redeliver ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["failed", "delivered", "pending"])
async def test_redeliver_makes_the_delivery_pending_and_due(
    api: httpx.AsyncClient,
    db: Database,
    client: dict[str, str],
    enqueued: Enqueued,
    status: str,
) -> None:
    config = await _config(api, client)
    later = utcnow() + timedelta(hours=1)
    [delivery_id] = await _spread(
        db, config, [utcnow()], status=status, attempt_count=3, next_attempt_at=later
    )
    before = await delivery(db, delivery_id)

    response = await api.post(
        f"{_base(config)}/deliveries/{delivery_id}/redeliver", headers=_h(client)
    )

    assert response.status_code == 202, response.text
    assert response.json() == {"delivery_id": delivery_id, "status": "pending"}
    row = await delivery(db, delivery_id)
    assert row["status"] == "pending"
    assert row["next_attempt_at"] <= utcnow()
    assert row["lease_expires_at"] is None
    assert (row["event_id"], row["body"]) == (before["event_id"], before["body"])
    assert enqueued == [delivery_id]


@pytest.mark.parametrize("status", ["cancelled", "held"])
async def test_a_cancelled_or_held_delivery_is_not_redelivered(
    api: httpx.AsyncClient, db: Database, client: dict[str, str], enqueued: Enqueued, status: str
) -> None:
    config = await _config(api, client)
    [delivery_id] = await _spread(db, config, [utcnow()], status=status)

    response = await api.post(
        f"{_base(config)}/deliveries/{delivery_id}/redeliver", headers=_h(client)
    )

    assert_error(response, 409)
    assert status in response.json()["error"]["message"]
    assert (await delivery(db, delivery_id))["status"] == status
    assert enqueued == []


# --- recover ------------------------------------------------------------------------------


async def test_recover_sends_again_the_failed_deliveries_of_the_window(
    api: httpx.AsyncClient,
    db: Database,
    client: dict[str, str],
    enqueued: Enqueued,
) -> None:
    # Given failed deliveries inside and outside a window, and others that did not fail
    config, sibling = await _config(api, client), await _config(api, client)
    base = utcnow().replace(microsecond=0) - timedelta(days=2)
    inside = [base + timedelta(hours=h) for h in (1, 2, 3)]
    recovered = await _spread(db, config, inside, status="failed")
    [before] = await _spread(db, config, [base - timedelta(hours=1)], status="failed")
    [after] = await _spread(db, config, [base + timedelta(hours=5)], status="failed")
    others = [
        *await _spread(db, config, [base + timedelta(hours=2)], status="delivered"),
        *await _spread(db, config, [base + timedelta(hours=2)], status="cancelled"),
        *await _spread(db, config, [base + timedelta(hours=2)], status="held"),
        *await _spread(db, sibling, [base + timedelta(hours=2)], status="failed"),
    ]
    body = {"since": base.isoformat(), "until": (base + timedelta(hours=4)).isoformat()}

    # When the window is recovered
    response = await api.post(f"{_base(config)}/recover", json=body, headers=_h(client))

    # Then exactly the failed deliveries of this configuration in it are due again
    assert response.status_code == 202, response.text
    assert response.json() == {"redelivered": 3}
    assert sorted(enqueued) == sorted(recovered)
    for delivery_id in recovered:
        row = await delivery(db, delivery_id)
        assert row["status"] == "pending"
        assert row["next_attempt_at"] <= utcnow()
    for delivery_id in (before, after):
        assert (await delivery(db, delivery_id))["status"] == "failed"
    assert [(await delivery(db, i))["status"] for i in others] == [
        "delivered",
        "cancelled",
        "held",
        "failed",
    ]


async def test_recover_without_until_takes_everything_since(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    config = await _config(api, client)
    now = utcnow()
    await _spread(db, config, [now - timedelta(hours=h) for h in (1, 2, 30)], status="failed")

    response = await api.post(
        f"{_base(config)}/recover",
        json={"since": (now - timedelta(days=1)).isoformat()},
        headers=_h(client),
    )

    assert response.status_code == 202, response.text
    assert response.json() == {"redelivered": 2}
    again = await api.post(
        f"{_base(config)}/recover",
        json={"since": (now - timedelta(days=1)).isoformat()},
        headers=_h(client),
    )
    assert again.json() == {"redelivered": 0}, "they are pending now, not failed"


_BAD_BODY_TIMES: list[Any] = [
    *_BAD_TIMES,
    0,
    0.5,
    1700000000,
    -1,
    True,
    ["2024-01-01T00:00:00Z"],
    {"at": "2024-01-01T00:00:00Z"},
]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "since"),
        ({"since": None}, "since"),
        ({"since": "2024-01-01T00:00:00Z", "status": "failed"}, "status"),
        *(({"since": bad}, "since") for bad in _BAD_BODY_TIMES),
        *(({"since": "2024-01-01T00:00:00Z", "until": bad}, "until") for bad in _BAD_BODY_TIMES),
    ],
    ids=repr,
)
async def test_recover_validation(
    api: httpx.AsyncClient, client: dict[str, str], body: dict[str, Any], field: str
) -> None:
    config = await _config(api, client)
    response = await api.post(f"{_base(config)}/recover", json=body, headers=_h(client))
    assert error_fields(response) == [field]


@pytest.mark.parametrize("field", ["since", "until"])
@pytest.mark.parametrize("value", _GOOD_TIMES)
async def test_a_body_time_with_an_offset_is_that_instant(
    api: httpx.AsyncClient,
    db: Database,
    client: dict[str, str],
    enqueued: Enqueued,
    field: str,
    value: str,
) -> None:
    config = await _config(api, client)
    noon = datetime.fromisoformat(_GOOD_TIMES[0])
    times = [noon, noon - timedelta(seconds=1)]
    at_noon, just_before = await _spread(db, config, times, status="failed")
    body = {"since": "2000-01-01T00:00:00Z", field: value}

    response = await api.post(f"{_base(config)}/recover", json=body, headers=_h(client))

    assert response.status_code == 202, response.text
    assert response.json() == {"redelivered": 1}
    assert enqueued == {"since": [at_noon], "until": [just_before]}[field]


# --- ping ---------------------------------------------------------------------------------


async def test_ping_creates_a_ping_delivery_whatever_the_subscription(
    api: httpx.AsyncClient, db: Database, client: dict[str, str], enqueued: Enqueued
) -> None:
    config = await _config(api, client, subscribed_events=["survey_finished"])
    before = utcnow()

    response = await api.post(f"{_base(config)}/ping", headers=_h(client))

    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"delivery_id"}
    delivery_id = body["delivery_id"]
    row = await delivery(db, delivery_id)
    assert row["event_type"] == "ping"
    assert row["config_id"] == config["id"]
    assert row["status"] == "pending"
    assert row["next_attempt_at"] <= utcnow()
    sent = json.loads(row["body"])
    assert list(sent) == ["event_type", "content"]
    assert sent["event_type"] == "ping"
    assert sent["content"]["config_id"] == config["id"]
    assert before - timedelta(seconds=1) <= _moment(sent["content"]["sent_at"]) <= utcnow()
    assert enqueued == [delivery_id]
    listed = await _list(api, client, config, event_type="ping")
    assert [item["id"] for item in listed["items"]] == [delivery_id]
    shown = await api.get(f"{_base(config)}/deliveries/{delivery_id}", headers=_h(client))
    assert shown.json()["event_type"] == "ping"


async def test_each_ping_is_a_new_delivery(api: httpx.AsyncClient, client: dict[str, str]) -> None:
    config = await _config(api, client)
    first = await api.post(f"{_base(config)}/ping", headers=_h(client))
    second = await api.post(f"{_base(config)}/ping", headers=_h(client))
    assert first.json()["delivery_id"] != second.json()["delivery_id"]


async def test_a_ping_to_a_disabled_configuration_is_held(
    api: httpx.AsyncClient, db: Database, client: dict[str, str]
) -> None:
    config = await _config(api, client)
    await disable_config(db, config["id"])

    response = await api.post(f"{_base(config)}/ping", headers=_h(client))

    assert response.status_code == 202, response.text
    row = await delivery(db, response.json()["delivery_id"])
    assert (row["event_type"], row["status"]) == ("ping", "held")
