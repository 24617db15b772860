"""`webhooks patients erase --client ID PATIENT_ID` (SPEC 14) as a process, on both
backends: the same erasure as the API, the same JSON, clear failures."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa

from core.clients import create_client
from core.database import Database
from core.tables import erasures
from outbox.fanout import fan_out_batch
from service.surveys import create_survey
from tests.outbox.helpers import new_config, survey_rows
from tests.processes import process_env, webhooks_fails, webhooks_ok
from tests.service.test_erasure import where_found

pytestmark = pytest.mark.e2e  # every test runs the CLI as a process


async def test_erase_prints_the_counts_and_leaves_nothing_of_the_patient(
    isolated_url: str, idb: Database
) -> None:
    client_id = str((await create_client(idb, "clinic"))["id"])
    await new_config(idb, client_id)
    tag = uuid.uuid4().hex
    patient_id, secret = f"patient {tag}", f"answer-{tag}"
    for _ in range(2):
        await create_survey(idb, client_id, patient_id=patient_id, answers={"q": secret})
    await create_survey(idb, client_id, patient_id="someone else", answers={"q": "kept"})
    await fan_out_batch(idb, batch_size=100)

    output = webhooks_ok(
        "patients",
        "erase",
        "--client",
        client_id,
        patient_id,
        env=process_env(DATABASE_URL=isolated_url),
    )

    assert json.loads(output) == {"surveys": 2, "deliveries": 2}
    assert await where_found(idb, patient_id, secret) == []
    assert {row["patient_id"] for row in await survey_rows(idb, client_id)} == {
        "erased",
        "someone else",
    }


async def test_erase_refuses_an_unknown_client_or_a_bad_patient_id(
    isolated_url: str, idb: Database
) -> None:
    env = process_env(DATABASE_URL=isolated_url)
    client_id = str((await create_client(idb, "clinic"))["id"])

    webhooks_fails(
        "patients", "erase", "--client", str(uuid.uuid4()), "p-1", env=env, mentions="no client"
    )
    webhooks_fails(
        "patients", "erase", "--client", "nope", "p-1", env=env, mentions="not a client id"
    )
    for bad in ("p\x01", "x" * 201):
        webhooks_fails(
            "patients", "erase", "--client", client_id, bad, env=env, mentions="not a patient id"
        )
    assert await idb.fetch_all(sa.select(erasures)) == []  # nothing recorded
