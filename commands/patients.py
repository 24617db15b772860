"""`webhooks patients`: the right to erasure for operators (SPEC 14)."""

from __future__ import annotations

import re

import click

from commands.common import fail, migrated_settings, print_json, run_with_db
from core.database import Database


@click.group()
def patients() -> None:
    """Act on a client's patients (operators)."""


async def _erase(db: Database, client_id: str, patient_id: str) -> dict[str, int] | None:
    from core.clients import client_exists
    from core.erasures import erase

    if not await client_exists(db, client_id):
        return None
    erased = await erase(db, client_id, patient_id)
    return {"surveys": erased.surveys, "deliveries": erased.deliveries}


@patients.command("erase")
@click.option("--client", "client_id", required=True, help="The client whose patient it is.")
@click.argument("patient_id")
def erase(client_id: str, patient_id: str) -> None:
    """Erase a patient of a client, as `POST /api/v2/patients/{patient_id}/erase` does;
    prints `{"surveys": n, "deliveries": m}`. A revoked client's patients can be erased
    too. Exits 1, changing nothing, for an unknown client or an invalid patient id."""
    from pydantic import ValidationError

    from service.routing import IdConvertor
    from service.schemas import PatientPath

    if re.fullmatch(IdConvertor.regex, client_id) is None:
        fail(f"not a client id (a UUID): {client_id!r}")
    try:
        PatientPath(patient_id=patient_id)  # the API's rule: 1..200, no control characters
    except ValidationError:
        fail(f"not a patient id (1 to 200 characters, no control characters): {patient_id!r}")
    settings = migrated_settings()
    answer = run_with_db(settings, lambda db: _erase(db, client_id.lower(), patient_id))
    if answer is None:
        fail(f"no client {client_id}")
    print_json(answer)
