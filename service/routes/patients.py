"""`/patients/{patient_id}/erase`: the right to erasure (SPEC 14)."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from core import erasures
from service.auth import client_id
from service.errors import ValidationFailed
from service.routing import ApiRoute, Operation
from service.schemas import Erasure, PatientPath


def _patient_id(request: Request) -> str:
    """The path's patient id, as surveys take one; a 422 naming `patient_id` if not."""
    try:
        path = PatientPath.model_validate({"patient_id": request.path_params["patient_id"]})
    except ValidationError as exc:
        raise ValidationFailed.from_pydantic(exc) from None
    return path.patient_id


async def erase_patient(request: Request) -> JSONResponse:
    erased = await erasures.erase(request.app.state.db, client_id(request), _patient_id(request))
    answer = Erasure(surveys=erased.surveys, deliveries=erased.deliveries)
    return JSONResponse(answer.model_dump(mode="json"), status_code=202)


routes = [
    # `path`, not the default segment: a patient id may hold a `/` (sent as `%2F`). A
    # line break in it stops the router (its patterns end at one): that is a 404.
    ApiRoute(
        "/patients/{patient_id:path}/erase",
        erase_patient,
        method="POST",
        operation=Operation(
            "Erase a patient: the client's surveys of the patient lose their answers and "
            "patient id, their events' and deliveries' payloads are emptied, their pending "
            "and held deliveries cancelled; done before the answer",
            "patients",
            {202: Erasure},
            path=PatientPath,
            errors=(404, 422),
        ),
    ),
]
