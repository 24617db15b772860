"""SPEC 4: every failure is a JSON error of the right status, and changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from service.bodies import MAX_BODY_BYTES
from tests.service.support import (
    CONFIGS,
    SEED_TOKEN,
    api_operations,
    assert_error,
    config_body,
    create_config,
    error_fields,
    fill_path,
    snapshot,
)

# The seed document's token update, trailing comma included: not JSON.
SEED_TOKEN_UPDATE = b'{\n"authorization_token": "zGORr7q1I4egIr0c0eKXD7CMpIcjFooJ",\n}'

Send = Callable[[bytes, dict[str, str]], Awaitable[httpx.Response]]


SURVEYS = "/api/v2/surveys"
BODY_ROUTES = ["config create", "config update", "survey create", "survey complete"]


async def _body_route(name: str, api: httpx.AsyncClient, auth: dict[str, str]) -> tuple[str, str]:
    """The method and path of the route `name` (of `BODY_ROUTES`), making the
    configuration or the in-progress survey that it changes."""
    if name == "config create":
        return "POST", CONFIGS
    if name == "config update":
        return "PATCH", f"{CONFIGS}/{(await create_config(api, auth))['id']}"
    if name == "survey create":
        return "POST", SURVEYS
    created = await api.post(SURVEYS, json={"patient_id": "p"}, headers=auth)
    assert created.status_code == 201, created.text
    return "PATCH", f"{SURVEYS}/{created.json()['id']}"


@pytest.fixture(params=BODY_ROUTES)
async def send(
    request: pytest.FixtureRequest, api: httpx.AsyncClient, auth: dict[str, str]
) -> Send:
    """Sends a raw body to one of the routes that read one: the configurations' POST and
    PATCH, the surveys' POST and PATCH (a completion: it writes a survey and an event)."""
    method, path = await _body_route(request.param, api, auth)

    async def send_body(content: bytes, headers: dict[str, str]) -> httpx.Response:
        return await api.request(method, path, content=content, headers={**auth, **headers})

    return send_body


JSON = {"Content-Type": "application/json"}


async def _refused(app: Starlette, send: Send, content: bytes, status: int, **headers: str) -> str:
    """Send `content`; assert a SPEC 4 error of `status` and an untouched database."""
    before = await snapshot(app.state.db)
    response = await send(content, {**JSON, **headers})
    error = assert_error(response, status)
    assert await snapshot(app.state.db) == before
    return str(error["message"])


# --- 400 --------------------------------------------------------------------------------


async def test_seed_trailing_comma_is_400_naming_the_position(app: Starlette, send: Send) -> None:
    message = await _refused(app, send, SEED_TOKEN_UPDATE, 400)
    assert "line 3 column 1" in message, message


@pytest.mark.parametrize(
    "content",
    [
        b'{"url": "https://example.com/",',
        b"{'url': 'https://example.com/'}",
        b'{"url": "https://example.com/"} trailing',
        b"not json at all",
        b"{",
        b'{"a": 1}{"b": 2}',
        b"\xef\xbb\xbf{}",  # a byte order mark is not JSON
    ],
)
async def test_malformed_json_is_400(app: Starlette, send: Send, content: bytes) -> None:
    await _refused(app, send, content, 400)


@pytest.mark.parametrize(
    "content", [b"[]", b'[{"url": "https://example.com/"}]', b'"text"', b"42", b"null", b"true"]
)
async def test_json_that_is_not_an_object_is_400(
    app: Starlette, send: Send, content: bytes
) -> None:
    await _refused(app, send, content, 400)


@pytest.mark.parametrize("content", [b"", b"   \n"])
async def test_empty_body_is_400(app: Starlette, send: Send, content: bytes) -> None:
    await _refused(app, send, content, 400)


@pytest.mark.parametrize(
    "content", [b'{"url": "https://example.com/\xff"}', b"\xff\xfe{\x00}\x00", b'{"a": "\xc3"}']
)
async def test_body_that_is_not_utf8_is_400(app: Starlette, send: Send, content: bytes) -> None:
    await _refused(app, send, content, 400)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
async def test_non_finite_numbers_are_400(app: Starlette, send: Send, constant: bytes) -> None:
    await _refused(app, send, b'{"url": ' + constant + b"}", 400)


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"url": "https://example.com/", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["arrays", "objects", "inside a valid body"],
)
async def test_deeply_nested_json_is_400_not_500(
    app: Starlette, send: Send, content: bytes
) -> None:
    await _refused(app, send, content, 400)


async def test_moderately_nested_json_is_a_validation_error(app: Starlette, send: Send) -> None:
    content = b'{"url": ' + b"[" * 900 + b"]" * 900 + b"}"
    await _refused(app, send, content, 422)


# --- 413 --------------------------------------------------------------------------------


def _big_body() -> bytes:
    padding = "a" * (MAX_BODY_BYTES + 1)
    return f'{{"url": "https://example.com/{padding}"}}'.encode()


async def test_body_over_1_mib_is_413(app: Starlette, send: Send) -> None:
    await _refused(app, send, _big_body(), 413)


async def test_body_of_1_mib_is_read(app: Starlette, send: Send) -> None:
    content = b'{"url": "https://example.com/", "x": "' + b"a" * MAX_BODY_BYTES + b'"}'
    content = content[: MAX_BODY_BYTES - 2] + b'"}'
    assert len(content) == MAX_BODY_BYTES
    await _refused(app, send, content, 422)


async def test_declared_length_over_1_mib_is_413_before_reading(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    sent = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):
            sent += 65_536
            yield b" " * 65_536

    headers = {**auth, **JSON, "Content-Length": str(64 * 65_536)}
    response = await api.post(CONFIGS, content=stream(), headers=headers)
    assert_error(response, 413)
    assert sent <= 65_536


async def test_lying_content_length_is_413(app: Starlette, send: Send) -> None:
    await _refused(app, send, _big_body(), 413, **{"Content-Length": "10"})


@pytest.mark.parametrize("chunk_bytes", [1024, 65_536])
async def test_chunked_body_over_1_mib_is_413_without_reading_it_all(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str], chunk_bytes: int
) -> None:
    sent = 0
    total = 16 * MAX_BODY_BYTES

    async def stream() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"url": "'
        while sent < total:
            sent += chunk_bytes
            yield b"a" * chunk_bytes

    before = await snapshot(app.state.db)
    response = await api.post(CONFIGS, content=stream(), headers={**auth, **JSON})
    assert "content-length" not in response.request.headers
    assert_error(response, 413)
    assert sent <= MAX_BODY_BYTES + chunk_bytes, sent
    assert await snapshot(app.state.db) == before


# --- 415 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "text/json",
        "",
    ],
)
async def test_body_with_another_content_type_is_415(
    app: Starlette, send: Send, content_type: str
) -> None:
    content = b'{"url": "https://example.com/x", "subscribed_events": ["survey_created"]}'
    await _refused(app, send, content, 415, **{"Content-Type": content_type})


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/json"]
)
async def test_json_content_types_are_accepted(
    api: httpx.AsyncClient, auth: dict[str, str], content_type: str
) -> None:
    response = await api.post(
        CONFIGS,
        content=httpx.Request("POST", "/", json=config_body()).content,
        headers={**auth, "Content-Type": content_type},
    )
    assert response.status_code == 201, response.text


async def test_content_type_is_checked_before_size(app: Starlette, send: Send) -> None:
    await _refused(app, send, _big_body(), 415, **{"Content-Type": "text/plain"})


# --- 404, 405 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/nope", "/api", "/api/v3/config/webhook", "/api/v2/nope", "/api/v2/config"]
)
async def test_unknown_route_is_a_json_404(
    api: httpx.AsyncClient, auth: dict[str, str], path: str
) -> None:
    for method in ("GET", "POST", "DELETE"):
        assert_error(await api.request(method, path, headers=auth), 404)


async def test_unknown_route_under_the_api_needs_auth_first(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/v2/nope")
    assert_error(response, 401)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", CONFIGS, {"GET", "POST"}),
        ("DELETE", CONFIGS, {"GET", "POST"}),
        ("PATCH", CONFIGS, {"GET", "POST"}),
        ("PUT", CONFIGS + "/{id}", {"GET", "PATCH", "DELETE"}),
        ("POST", CONFIGS + "/{id}", {"GET", "PATCH", "DELETE"}),
        ("POST", CONFIGS + "/{id}/secret", {"GET"}),
        ("GET", CONFIGS + "/{id}/secret/rotate", {"POST"}),
        ("POST", "/api/v2/event-types", {"GET"}),
        ("POST", "/healthz", {"GET"}),
        ("POST", "/api/v2/openapi.json", {"GET"}),
    ],
)
async def test_wrong_method_is_a_json_405_with_allow(
    app: Starlette,
    api: httpx.AsyncClient,
    auth: dict[str, str],
    method: str,
    path: str,
    allowed: set[str],
) -> None:
    created = await create_config(api, auth)
    before = await snapshot(app.state.db)

    response = await api.request(
        method, path.replace("{id}", created["id"]), json=config_body(), headers=auth
    )

    assert_error(response, 405)
    listed = {part.strip() for part in response.headers.get("allow", "").split(",")}
    assert allowed <= listed, response.headers.get("allow")
    assert await snapshot(app.state.db) == before


# --- 422 and ids that are not ids -------------------------------------------------------


async def test_empty_patch_is_422(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth)
    before = await snapshot(app.state.db)

    response = await api.patch(f"{CONFIGS}/{created['id']}", json={}, headers=auth)

    assert error_fields(response)
    assert await snapshot(app.state.db) == before


ODD_IDS = ["%00", "not-a-uuid", "a" * 5000, "%FF%FE", "%F0%9F%92%A9", "'; DROP TABLE x; --"]


@pytest.mark.parametrize("config_id", ODD_IDS, ids=range(len(ODD_IDS)))
async def test_an_id_that_is_not_a_uuid_is_404_not_500(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str], config_id: str
) -> None:
    await create_config(api, auth)
    before = await snapshot(app.state.db)
    one = f"{CONFIGS}/{config_id}"

    answers = {
        "GET": await api.get(one, headers=auth),
        "PATCH": await api.patch(one, json={"authorization_token": SEED_TOKEN}, headers=auth),
        "DELETE": await api.delete(one, headers=auth),
        "GET secret": await api.get(f"{one}/secret", headers=auth),
        "POST rotate": await api.post(f"{one}/secret/rotate", headers=auth),
    }

    statuses = {name: response.status_code for name, response in answers.items()}
    assert statuses == dict.fromkeys(answers, 404), statuses
    for response in answers.values():
        assert_error(response, 404)
    assert await snapshot(app.state.db) == before


@pytest.mark.parametrize(
    "content",
    [
        b'{"url": "https://example.com/\\ud800", "subscribed_events": ["survey_created"]}',
        b'{"\\ud800": 1, "url": "https://example.com/", "subscribed_events": ["survey_created"]}',
        b'{"url": "https://example.com/\\u0000", "subscribed_events": ["survey_created"]}',
        b'{"\\u0000": 1, "url": "https://example.com/", "subscribed_events": ["survey_created"]}',
        b'{"url": "https://example.com/", "subscribed_events": ["survey_created\\u0000"]}',
        b'{"url": "https://[::1/", "subscribed_events": ["survey_created"]}',
        b'{"url": "https://example.com:99999/", "subscribed_events": ["survey_created"]}',
        b'{"url": "https://example.com/", "subscribed_events": [{"a": 1}]}',
        b'{"url": "https://example.com/", "subscribed_events": 1e999999}',
        b'{"url": "https://example.com/", "subscribed_events": ["survey_created"], "x": '
        + b"1" * 5000
        + b"}",
    ],
    ids=range(10),
)
async def test_odd_strings_and_numbers_are_422_not_500(
    app: Starlette, send: Send, content: bytes
) -> None:
    before = await snapshot(app.state.db)
    response = await send(content, JSON)
    assert response.status_code in (400, 422), response.text
    assert_error(response, response.status_code)
    assert await snapshot(app.state.db) == before


async def test_error_bodies_never_echo_the_request(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    secret_looking = "Sup3r-Secret-Token-" + uuid.uuid4().hex
    body: dict[str, Any] = {"url": f"ftp://{secret_looking}", "authorization_token": "x y"}
    response = await api.post(CONFIGS, json=body, headers=auth)
    assert_error(response, 422)
    assert secret_looking not in response.text


# Bodies that are well-formed JSON but carry what a database refuses or cannot represent.
HOSTILE_BODIES = [
    b'{"patient_id": "p\\u0000", "answers": {}}',
    b'{"patient_id": "p", "answers": {"x": 1e999}}',
    b'{"patient_id": "p", "answers": {"x": -1e999}}',
    b'{"status": "completed", "answers": {"x": 1e999}}',
    b'{"url": "https://example.com/", "subscribed_events": ["survey_created"], "x": 1e999}',
]
HOSTILE_IDS = ["%00", str(uuid.uuid4())]


async def test_no_route_answers_500_to_hostile_input(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    """SPEC 4: no input ever yields a 500, on any route of the API (walked, not listed)."""
    failures = []
    for method, path in api_operations(app):
        for config_id in HOSTILE_IDS:
            url = fill_path(path, config_id)
            bodies = HOSTILE_BODIES if method in ("POST", "PATCH", "PUT") else [b""]
            for content in bodies:
                try:
                    response = await api.request(
                        method, url, content=content, headers={**auth, **JSON}
                    )
                except Exception as exc:  # the in-process transport re-raises what made a 500
                    failures.append(f"{method} {url} {content[:60]!r}: {type(exc).__name__}")
                    continue
                if response.status_code >= 500:
                    failures.append(f"{method} {url} {content[:60]!r}: {response.status_code}")
                elif response.status_code >= 400:
                    assert_error(response, response.status_code)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("number", [b"1e999", b"-1e999"])
async def test_number_beyond_float_range_is_400_like_infinity(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str], number: bytes
) -> None:
    """`1e999` parses to infinity, which is no more storable than `Infinity` itself:
    SQLite would keep null in its place and PostgreSQL's json refuses it."""
    before = await snapshot(app.state.db)
    content = b'{"patient_id": "p", "answers": {"x": ' + number + b"}}"
    try:
        response = await api.post(SURVEYS, content=content, headers={**auth, **JSON})
    except Exception as exc:  # the in-process transport re-raises what made a 500
        pytest.fail(f"500: {type(exc).__name__}")
    assert_error(response, 400)
    assert await snapshot(app.state.db) == before
