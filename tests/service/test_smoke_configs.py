from __future__ import annotations

import httpx


async def test_create_then_get_hides_token(api: httpx.AsyncClient, auth: dict[str, str]) -> None:
    created = await api.post(
        "/api/v2/config/webhook",
        json={"url": "https://example.com/hook", "subscribed_events": ["survey_created"]},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["signing_secret"].startswith("whsec_")
    fetched = await api.get(f"/api/v2/config/webhook/{body['id']}", headers=auth)
    assert fetched.status_code == 200
    assert "authorization_token" not in fetched.json()
