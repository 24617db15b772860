"""`filter` and `payload` at fan-out (SPEC 13), both backends: an event filtered out
makes no delivery; a thin configuration's delivery stores the thin body, and each
delivery carries its event's seq."""

from __future__ import annotations

import json
from typing import Any

from core import configs
from core.controls import passes
from core.database import Database
from outbox.fanout import fan_out_batch
from outbox.writer import add_event
from tests.outbox.helpers import TOKEN, deliveries_of, new_client_id, outbox_rows

SURVEY = {"id": "s-1", "patient_id": "p-1", "status": "in_progress", "answers": {"q1": "yes"}}


async def _config(db: Database, client_id: str, **controls: Any) -> dict[str, Any]:
    return await configs.create_config(
        db,
        client_id,
        url="https://receiver.example/hooks",
        subscribed_events=["survey_created", "survey_finished"],
        authorization_token=TOKEN,
        controls=controls,
    )


async def _fan_out(db: Database, client_id: str, *contents: dict[str, Any]) -> None:
    for content in contents:
        async with db.transaction():
            await add_event(db, client_id=client_id, event_type="survey_created", content=content)
    while (await fan_out_batch(db, batch_size=100)).events:
        pass


async def test_a_filter_delivers_only_the_events_it_holds_true(db: Database) -> None:
    client_id = await new_client_id(db)
    yes = await _config(db, client_id, filter="content.answers.q1 == 'yes'")
    everything = await _config(db, client_id)
    no = {**SURVEY, "id": "s-2", "answers": {"q1": "no"}}
    missing = {**SURVEY, "id": "s-3", "answers": {}}

    await _fan_out(db, client_id, SURVEY, no, missing)

    [kept] = await deliveries_of(db, config_id=yes["id"])
    assert json.loads(kept["body"])["content"]["id"] == "s-1"
    assert len(await deliveries_of(db, config_id=everything["id"])) == 3


async def test_a_thin_configuration_gets_the_survey_id_only(db: Database) -> None:
    client_id = await new_client_id(db)
    thin = await _config(db, client_id, payload="thin")
    full = await _config(db, client_id)

    await _fan_out(db, client_id, SURVEY)

    [thin_delivery] = await deliveries_of(db, config_id=thin["id"])
    [full_delivery] = await deliveries_of(db, config_id=full["id"])
    assert json.loads(thin_delivery["body"]) == {
        "event_type": "survey_created",
        "content": {"id": "s-1"},
    }
    assert json.loads(full_delivery["body"])["content"] == SURVEY
    [event] = await outbox_rows(db, client_id)
    assert thin_delivery["seq"] == full_delivery["seq"] == event["seq"]


async def test_a_thin_configuration_gets_operational_events_whole(db: Database) -> None:
    """SPEC 13: only survey events are thinned; an operational event carries no patient
    data (and no `id` to keep)."""
    client_id = await new_client_id(db)
    about = await _config(db, client_id)
    thin = await configs.create_config(
        db,
        client_id,
        url="https://receiver.example/ops",
        subscribed_events=["webhook_disabled"],
        authorization_token=TOKEN,
        controls={"payload": "thin"},
    )
    await configs.update_config(db, client_id, about["id"], {"enabled": False})

    await _fan_out(db, client_id)

    [delivery] = await deliveries_of(db, config_id=thin["id"])
    body = json.loads(delivery["body"])
    assert body["event_type"] == "webhook_disabled"
    assert body["content"]["config_id"] == about["id"]
    assert body["content"]["disabled_reason"] == "manual"


async def test_the_filter_sees_the_full_body_of_a_thin_configuration(db: Database) -> None:
    client_id = await new_client_id(db)
    config = await _config(db, client_id, payload="thin", filter="content.patient_id == 'p-1'")

    await _fan_out(db, client_id, SURVEY, {**SURVEY, "id": "s-9", "patient_id": "p-9"})

    [kept] = await deliveries_of(db, config_id=config["id"])
    assert json.loads(kept["body"])["content"] == {"id": "s-1"}


def test_a_filter_that_fails_on_an_event_lets_it_not_through_and_never_raises() -> None:
    """jmespath raises TypeError on `>` between a string and a number: one such event must
    not stop the fan-out of every client's events."""
    content = {"answers": {"age": "forty"}}

    assert passes("content.answers.age > `18`", "survey_created", content) is False
    assert passes("length(content.answers.age)", "survey_created", {"answers": {}}) is False


def test_truth_is_jmespath_truth() -> None:
    content = {"zero": 0, "empty": "", "list": [], "object": {}, "no": False, "text": "x"}

    held = {
        path: passes(f"content.{path}", "survey_created", content)
        for path in ("zero", "empty", "list", "object", "no", "text", "absent")
    }

    assert held == {
        "zero": True,
        "empty": False,
        "list": False,
        "object": False,
        "no": False,
        "text": True,
        "absent": False,
    }
    assert passes(None, "survey_created", content)
    # A run-time type error lets nothing through.
    assert not passes("length(content.zero)", "survey_created", content)
